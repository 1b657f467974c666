//! The integer GEMM of quantised products against the float GEMM of the same shapes, one
//! thread: `cargo run --release -p tessera-kernels --example qgemm_bench`. Prints the best
//! of 5 rounds of 200 calls per shape (µs per call), the activation quantised inside the
//! integer product as the runtime's `QuantMatMul` does.
use std::time::Instant;
use tessera_ir::op::MatMulAttrs;
use tessera_ir::{DType, Op, Tensor};
use tessera_kernels::{eval, quant_matmul, ActQuant, PackedQWeight};

/// Best time per call of `f` (µs) over 5 rounds of 200 calls.
fn best(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..200 {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / 200.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if !tessera_kernels::int8_gemm_available() {
        println!("this CPU has no AVX-512 VNNI: the integer GEMM runs its portable loop");
    }
    println!("| M×K×N | int8 (µs) | f32 (µs) | f32 / int8 |");
    println!("|---|---|---|---|");
    let shapes = [
        (128, 64, 192),
        (128, 64, 64),
        (128, 256, 64),
        (128, 64, 256),
        (1024, 64, 192),
        (1024, 256, 64),
        (128, 768, 768),
    ];
    for (m, k, n) in shapes {
        let q: Vec<i64> = (0..k * n).map(|i| (i % 255) as i64 - 128).collect();
        let w = PackedQWeight::pack(k, n, &q, DType::I8, &vec![0.01; n], &vec![0; n])
            .expect("in-range weight");
        let xs = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let x = Tensor::f32(vec![m, k], xs);
        let act = ActQuant {
            to: DType::U8,
            sq: 0.02,
            zq: 128.0,
            sd: 0.02,
            zd: 128.0,
        };
        let b = Tensor::f32(
            vec![k, n],
            (0..k * n).map(|i| (i % 13) as f32 * 0.1).collect(),
        );
        let mm = Op::MatMul(MatMulAttrs {});
        let int8 = best(|| {
            quant_matmul(&x, act, &w, None, None).expect("shapes match");
        });
        let f32 = best(|| {
            eval(&mm, &[&x, &b]).expect("shapes match");
        });
        println!("| {m}×{k}×{n} | {int8:.1} | {f32:.1} | {:.2} |", f32 / int8);
    }
}
