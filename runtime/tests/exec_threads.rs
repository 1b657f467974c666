//! A CPU device with several threads (`SessionOptions::threads_per_device`) gives the same
//! outputs, bit for bit, as one thread: products large enough for the device's pool
//! (split over output blocks), a fused attention (split over heads) and a long elementwise
//! program (split over rows) all run in it here; pinning the threads to cores changes
//! nothing either.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor};
use tessera_runtime::session::{Session, SessionOptions};
use tessera_runtime::weights::WeightStore;

/// `gelu(x·W + b) · W2`, then self-attention of the result with itself (as q, k and v;
/// 8 heads), then a broadcast elementwise tree: x [4, 256, 256].
fn graph() -> (Graph, BTreeMap<String, Tensor>) {
    let (b, s, h) = (4, 256, 256);
    let (heads, d) = (8, 32);
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![b, s, h]);
    let w = inline_weight(&mut g, "w", rand_f32(&[h, h], 1));
    let bias = inline_weight(&mut g, "bias", rand_f32(&[h], 2));
    let w2 = inline_weight(&mut g, "w2", rand_f32(&[h, h], 3));
    let shape = vec![b, s, h];
    let mm = Op::MatMul(MatMulAttrs {});
    let y = f32_node(&mut g, "mm", mm.clone(), vec![x, w], shape.clone());
    let y = binary_node(&mut g, "bias", BinaryOp::Add, [y, bias], shape.clone());
    let gelu = Op::Gelu(GeluAttrs {
        tanh_approximation: false,
    });
    let y = f32_node(&mut g, "gelu", gelu, vec![y], shape.clone());
    let z = f32_node(&mut g, "mm2", mm.clone(), vec![y, w2], shape.clone());
    let split = |g: &mut Graph, name: &str, perm: Vec<usize>| {
        let r = Op::Reshape(ReshapeAttrs {
            shape: vec![b, s, heads, d],
        });
        let r = f32_node(g, &format!("{name}_r"), r, vec![z], vec![b, s, heads, d]);
        let out: Vec<usize> = perm.iter().map(|&p| [b, s, heads, d][p]).collect();
        f32_node(
            g,
            &format!("{name}_t"),
            Op::Transpose(TransposeAttrs { perm }),
            vec![r],
            out,
        )
    };
    let q = split(&mut g, "q", vec![0, 2, 1, 3]);
    let kt = split(&mut g, "k", vec![0, 2, 3, 1]);
    let v = split(&mut g, "v", vec![0, 2, 1, 3]);
    let c = inline_weight(&mut g, "c", Tensor::f32(vec![], vec![(d as f32).sqrt()]));
    let sc = vec![b, heads, s, s];
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![q, kt], sc.clone());
    let scaled = binary_node(&mut g, "scale", BinaryOp::Div, [scores, c], sc.clone());
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![scaled], sc);
    let o = f32_node(&mut g, "pv", mm, vec![p, v], vec![b, heads, s, d]);
    let o = f32_node(
        &mut g,
        "merge_t",
        Op::Transpose(TransposeAttrs {
            perm: vec![0, 2, 1, 3],
        }),
        vec![o],
        vec![b, s, heads, d],
    );
    let o = f32_node(
        &mut g,
        "merge_r",
        Op::Reshape(ReshapeAttrs {
            shape: shape.clone(),
        }),
        vec![o],
        shape.clone(),
    );
    let t = f32_node(
        &mut g,
        "tanh",
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Tanh,
        }),
        vec![o],
        shape.clone(),
    );
    let out = binary_node(&mut g, "scale_out", BinaryOp::Mul, [t, bias], shape.clone());
    g.outputs.push(out);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&shape, 4))]);
    (g, inputs)
}

#[test]
fn several_threads_per_device_give_the_same_bits() {
    let (g, inputs) = graph();
    let plan = single_rank_plan(g);
    let run = |threads: usize, pin_threads: bool| {
        let opts = SessionOptions {
            threads_per_device: threads,
            pin_threads,
            ..SessionOptions::default()
        };
        let session = Session::new(plan.clone(), WeightStore::with_dir("."), &opts)
            .unwrap_or_else(|e| panic!("session: {e}"));
        let (out, stats) = session
            .run_shared(std::sync::Arc::new(inputs.clone()))
            .unwrap_or_else(|e| panic!("run: {e}"));
        (out, stats.ranks[0].fused.clone())
    };
    let (one, fused) = run(1, false);
    for kind in [
        "fused MatMul+Bias+Gelu",
        "fused Attention",
        "fused Elementwise",
    ] {
        assert_eq!(fused.get(kind), Some(&1), "{kind} not run: {fused:?}");
    }
    let (three, _) = run(3, false);
    assert_eq!(one, three, "3 threads per device changed the outputs");
    // Pinned threads (on this machine's cores where there are enough, else unpinned) run
    // the same steps.
    let (pinned, _) = run(2, true);
    assert_eq!(one, pinned, "pinned threads changed the outputs");
    let want = reference(&plan, &inputs);
    assert!(rel_err(&one[0], &want[0]) < 1e-5);
}

/// Small work, below what a sleeping pool is handed and above what a polling one splits:
/// `relu(conv3x3(x) + b)` on 2 images of 16 channels over 16×16 (2.4M multiply-adds), a
/// `[1, 128, 64] · [64, 256]` product (2.1M), then on its 32K elements an elementwise
/// program without broadcasts (one block, split within it) and an RMSNorm (split by rows).
fn small_graph() -> (Graph, BTreeMap<String, Tensor>) {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![2, 16, 16, 16]);
    let w = inline_weight(&mut g, "w", rand_f32(&[32, 16, 3, 3], 5));
    let b = inline_weight(&mut g, "b", rand_f32(&[32], 6));
    let conv = Op::Conv(ConvAttrs {
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        depthwise: false,
    });
    let y = f32_node(&mut g, "conv", conv, vec![x, w, b], vec![2, 32, 16, 16]);
    let relu = Op::Unary(UnaryAttrs {
        kind: UnaryOp::Relu,
    });
    let y = f32_node(&mut g, "relu", relu, vec![y], vec![2, 32, 16, 16]);
    let h = g.add_input("h", DType::F32, vec![1, 128, 64]);
    let wh = inline_weight(&mut g, "wh", rand_f32(&[64, 256], 7));
    let z = f32_node(
        &mut g,
        "mm",
        Op::MatMul(MatMulAttrs {}),
        vec![h, wh],
        vec![1, 128, 256],
    );
    let shape = vec![1, 128, 256];
    let tanh = Op::Unary(UnaryAttrs {
        kind: UnaryOp::Tanh,
    });
    let t = f32_node(&mut g, "tanh", tanh, vec![z], shape.clone());
    let e = binary_node(&mut g, "gate", BinaryOp::Mul, [t, z], shape.clone());
    let scale = inline_weight(&mut g, "scale", rand_f32(&[256], 10));
    let norm = Op::RmsNorm(NormAttrs {
        axis: 2,
        epsilon: 1e-6,
    });
    let r = f32_node(&mut g, "norm", norm, vec![z, scale], shape);
    g.outputs.extend([y, e, r]);
    let inputs = BTreeMap::from([
        ("x".to_string(), rand_f32(&[2, 16, 16, 16], 8)),
        ("h".to_string(), rand_f32(&[1, 128, 64], 9)),
    ]);
    (g, inputs)
}

#[test]
fn polling_pools_split_small_work_with_the_same_bits_run_after_run() {
    let (g, inputs) = small_graph();
    let plan = single_rank_plan(g);
    let inputs = std::sync::Arc::new(inputs);
    let runs = |threads: usize| {
        let opts = SessionOptions {
            threads_per_device: threads,
            pin_threads: true,
            ..SessionOptions::default()
        };
        let session = Session::new(plan.clone(), WeightStore::with_dir("."), &opts)
            .unwrap_or_else(|e| panic!("session: {e}"));
        // Each run starts the pool's helpers and stops them at its end.
        (0..3)
            .map(|_| {
                let (out, stats) = session
                    .run_shared(inputs.clone())
                    .unwrap_or_else(|e| panic!("run: {e}"));
                let fused = &stats.ranks[0].fused;
                assert_eq!(fused.get("fused Elementwise"), Some(&1), "{fused:?}");
                out
            })
            .collect::<Vec<_>>()
    };
    let one = runs(1);
    assert_eq!(one[0].len(), 3);
    // Two threads poll where the machine has two cores, else they sleep between ops: the
    // same bits either way.
    for (i, out) in runs(2).iter().enumerate() {
        assert_eq!(&one[0], out, "run {i} on 2 threads changed the outputs");
    }
    let want = reference(&plan, &inputs);
    for (got, want) in one[0].iter().zip(&want) {
        assert!(rel_err(got, want) < 1e-5);
    }
}
