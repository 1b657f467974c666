//! GPU system checks run by `scripts/gpu_check.sh`: which CUDA libraries were found, a
//! one-rank NCCL communicator through every collective, and (ignored by default, run with
//! `--ignored`) the timing of a GEMM-bound layer against a bare cuBLAS sgemm. Each skips
//! (printing why) where no GPU or library is present; unverified on a GPU until run on one.
#![cfg(feature = "cuda")]

use std::time::Instant;
use tessera_ir::op::{GeluAttrs, MatMulAttrs};
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{DType, Op, Tensor};
use tessera_runtime::collectives::CollectiveSpec;
use tessera_runtime::cuda::buffer::{DeviceData, DeviceTensor};
use tessera_runtime::cuda::comm::{new_nccl_id, NcclTimeouts};
use tessera_runtime::cuda::context::{Gpu, Lane};
use tessera_runtime::cuda::libs::{CudaLib, LibSearch};
use tessera_runtime::cuda::ops::run_op;
use tessera_runtime::cuda::{CommSpec, CudaDevice};
use tessera_runtime::device::{Device, OutSpec};

fn skip_reason() -> Option<String> {
    let r = tessera_runtime::cuda::probe::unavailable_reason();
    if let Some(why) = &r {
        println!("skipping: {why}");
    }
    r
}

/// Prints where each library would be loaded from (never fails: a report line).
#[test]
fn report_libraries() {
    let s = LibSearch::from_process();
    for lib in [CudaLib::Nvrtc, CudaLib::Cublas, CudaLib::Nccl] {
        match s.find(lib) {
            Ok(f) => println!("library {}: {}", lib.name(), f.path.display()),
            Err(e) => println!(
                "library {}: by the loader's own search, or missing ({e})",
                lib.name()
            ),
        }
    }
}

/// World size 1 through NCCL: every collective is the identity, and each goes through
/// NCCL, the event wait and the async-error poll.
#[test]
fn one_rank_nccl_runs_every_collective() {
    if skip_reason().is_some() {
        return;
    }
    if let Err(e) = tessera_runtime::cuda::probe::nccl_library() {
        println!("skipping: {e}");
        return;
    }
    let id = new_nccl_id().expect("NCCL id");
    let timeouts = NcclTimeouts {
        init: std::time::Duration::from_secs(60),
        collective: std::time::Duration::from_secs(30),
    };
    let comm = CommSpec::Nccl {
        device: 0,
        id,
        timeouts,
    };
    let mut dev = CudaDevice::open(0, 1, comm).expect("one-rank NCCL device");
    let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let x = Tensor::f32(vec![4, 6], v);
    let xd = dev.upload(x.clone()).expect("upload");
    let spec = |kind, axis, to_axis| CollectiveSpec {
        kind,
        axis,
        to_axis,
        counts: vec![],
    };
    for s in [
        spec(CollectiveKind::AllReduce, None, None),
        spec(CollectiveKind::Broadcast, None, None),
        spec(CollectiveKind::AllGather, Some(1), None),
        spec(CollectiveKind::ReduceScatter, Some(1), None),
        spec(CollectiveKind::AllToAll, Some(0), Some(1)),
    ] {
        let y = dev
            .collective(&[0], &s, &xd)
            .unwrap_or_else(|e| panic!("{}: {e}", s.kind.as_str()));
        let got = dev.download(&y).expect("download");
        assert_eq!(got, x, "{} on one rank is the identity", s.kind.as_str());
        println!("nccl 1 rank {}: ok", s.kind.as_str());
    }
    // Integers and booleans travel too.
    let i = Tensor::new(
        DType::I64,
        vec![3],
        tessera_ir::TensorData::I64(vec![-1, 7, 1 << 40]),
    )
    .expect("i64");
    let id = dev.upload(i.clone()).expect("upload");
    let y = dev
        .collective(&[0], &spec(CollectiveKind::AllReduce, None, None), &id)
        .expect("i64 all-reduce");
    assert_eq!(dev.download(&y).expect("download"), i);
}

fn timed(lane: &Lane, reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    lane.synchronize().expect("sync");
    let t0 = Instant::now();
    for _ in 0..reps {
        f();
    }
    lane.synchronize().expect("sync");
    t0.elapsed().as_secs_f64() / reps as f64
}

/// A GEMM-bound MLP layer, `gelu(x·W1)·W2` with x [4096, 4096], W1 [4096, 16384], through
/// the backend's ops, against the same two products as bare cuBLAS sgemm calls on
/// preallocated buffers (the attainable peak of this cuBLAS on this device, f32).
#[test]
#[ignore = "timing: run by scripts/gpu_check.sh with --ignored"]
fn gemm_layer_against_cublas() {
    if skip_reason().is_some() {
        return;
    }
    use tessera_runtime::cuda::cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
    use tessera_runtime::cuda::cudarc::cublas::{Gemm, GemmConfig};
    let (t, d, h) = (4096usize, 4096usize, 16384usize);
    let gpu = Gpu::open(0).expect("GPU");
    let lane = gpu.lane().expect("lane");
    let fill = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 480.0).collect();
        DeviceTensor::upload(&lane, &Tensor::f32(shape, v)).expect("upload")
    };
    let (x, w1, w2) = (fill(vec![t, d]), fill(vec![d, h]), fill(vec![h, d]));
    let mm = Op::MatMul(MatMulAttrs {});
    let gelu = Op::Gelu(GeluAttrs {
        tanh_approximation: false,
    });
    let (sh, sy) = ([t, h], [t, d]);
    let out = |shape| OutSpec {
        dtype: DType::F32,
        shape,
    };
    let layer = timed(&lane, 5, || {
        let a = run_op(&lane, &mm, &[&x, &w1], &[out(&sh)])
            .expect("fc1")
            .remove(0);
        let g = run_op(&lane, &gelu, &[&a], &[out(&sh)])
            .expect("gelu")
            .remove(0);
        let y = run_op(&lane, &mm, &[&g, &w2], &[out(&sy)]).expect("fc2");
        drop(y);
    });
    let hbuf = fill(vec![t, h]);
    let ybuf = fill(vec![t, d]);
    let f32s = |b: &DeviceTensor| match &*b.data {
        DeviceData::F32(s) => s.clone(),
        _ => unreachable!("filled as f32"),
    };
    let (xs, w1s, w2s) = (f32s(&x), f32s(&w1), f32s(&w2));
    let (mut hs, mut ys) = (f32s(&hbuf), f32s(&ybuf));
    // Row-major C[M,N] = A[M,K]·B[K,N] as column-major Cᵀ = Bᵀ·Aᵀ.
    let cfg = |m: usize, n: usize, k: usize| GemmConfig {
        transa: CUBLAS_OP_N,
        transb: CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: 1.0f32,
        lda: n as i32,
        ldb: k as i32,
        beta: 0.0,
        ldc: n as i32,
    };
    let bare = timed(&lane, 5, || {
        // SAFETY: the buffers hold t·d, d·h, h·d, t·h and t·d f32 elements as the
        // configurations' dimensions and leading dimensions require.
        unsafe {
            lane.blas
                .gemm(cfg(t, h, d), &w1s, &xs, &mut hs)
                .expect("sgemm 1");
            lane.blas
                .gemm(cfg(t, d, h), &w2s, &hs, &mut ys)
                .expect("sgemm 2");
        }
    });
    let flops = 2.0 * 2.0 * (t * d * h) as f64;
    println!(
        "gemm layer [{t}x{d}]·[{d}x{h}]·[{h}x{d}] f32: {:.2} ms ({:.1} TFLOP/s); bare cuBLAS \
         sgemm x2: {:.2} ms ({:.1} TFLOP/s); layer/bare = {:.2}",
        layer * 1e3,
        flops / layer / 1e12,
        bare * 1e3,
        flops / bare / 1e12,
        layer / bare
    );
}
