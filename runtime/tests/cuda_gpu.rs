//! GPU tests of the CUDA backend. Each skips (printing why) when no CUDA driver, device,
//! NVRTC or cuBLAS is present, which is the case on the machines this was written on:
//! these tests are unverified on a GPU until run on one.
#![cfg(feature = "cuda")]
#[path = "exec_support/mod.rs"]
mod exec_support;

use exec_support::{embedding_plan, layouts_plan, mlp_plan, rand_f32, reference, rel_err};
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::plan::Plan;
use tessera_ir::{DType, Op, Tensor};
use tessera_runtime::cuda::buffer::DeviceTensor;
use tessera_runtime::cuda::context::Gpu;
use tessera_runtime::cuda::ops::run_op;
use tessera_runtime::cuda::{CommSpec, CudaDevice};
use tessera_runtime::device::{DeviceKind, OutSpec};
use tessera_runtime::exec::{run_one_rank, run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// Returns why the GPU tests must be skipped here, printing the standard line.
fn skip_reason() -> Option<String> {
    let r = tessera_runtime::cuda::probe::unavailable_reason();
    if let Some(why) = &r {
        println!("skipping: no CUDA driver found ({why})");
    }
    r
}

/// Largest absolute difference.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `op` on the GPU and on the CPU kernels and compares.
fn check_op(op: Op, inputs: Vec<Tensor>, tol: f32) {
    let gpu = Gpu::open(0).expect("open GPU 0");
    let lane = gpu.lane().expect("lane");
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let want = tessera_kernels::eval(&op, &refs).expect("CPU reference");
    let dev: Vec<DeviceTensor> = inputs
        .iter()
        .map(|t| DeviceTensor::upload(&lane, t).unwrap())
        .collect();
    let dev_refs: Vec<&DeviceTensor> = dev.iter().collect();
    let outs: Vec<OutSpec> = want
        .iter()
        .map(|t| OutSpec {
            dtype: t.dtype,
            shape: &t.shape,
        })
        .collect();
    let got = run_op(&lane, &op, &dev_refs, &outs).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
    for (g, w) in got.iter().zip(&want) {
        let g = g.download(&lane).unwrap();
        assert_eq!(g.shape, w.shape, "{}", op.name());
        let (gv, wv): (Vec<f32>, Vec<f32>) = (
            g.to_f64_vec().iter().map(|x| *x as f32).collect(),
            w.to_f64_vec().iter().map(|x| *x as f32).collect(),
        );
        let d = max_abs_diff(&gv, &wv);
        assert!(d <= tol, "{}: max |gpu - cpu| = {d}", op.name());
    }
}

fn f32t(shape: Vec<usize>, seed: u64) -> Tensor {
    rand_f32(&shape, seed)
}

#[test]
fn ops_match_the_cpu_kernels() {
    if skip_reason().is_some() {
        return;
    }
    check_op(
        Op::MatMul(MatMulAttrs {}),
        vec![f32t(vec![2, 3, 4, 5], 1), f32t(vec![5, 6], 2)],
        1e-4,
    );
    check_op(
        Op::MatMul(MatMulAttrs {}),
        vec![f32t(vec![2, 1, 4, 5], 3), f32t(vec![3, 5, 2], 4)],
        1e-4,
    );
    check_op(
        Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
        }),
        vec![f32t(vec![3, 4], 5), f32t(vec![6, 4], 6), f32t(vec![6], 7)],
        1e-4,
    );
    check_op(
        Op::Binary(BinaryAttrs {
            kind: BinaryOp::Add,
        }),
        vec![f32t(vec![2, 3, 4], 8), f32t(vec![3, 1], 9)],
        0.0,
    );
    check_op(
        Op::Binary(BinaryAttrs {
            kind: BinaryOp::Less,
        }),
        vec![f32t(vec![2, 3], 8), f32t(vec![3], 9)],
        0.0,
    );
    check_op(
        Op::Gelu(GeluAttrs {
            tanh_approximation: false,
        }),
        vec![f32t(vec![64], 10)],
        1e-5,
    );
    check_op(
        Op::Softmax(SoftmaxAttrs {
            axis: 1,
            log: false,
        }),
        vec![f32t(vec![2, 7, 3], 11)],
        1e-5,
    );
    check_op(
        Op::Softmax(SoftmaxAttrs { axis: 2, log: true }),
        vec![f32t(vec![2, 3, 300], 12)],
        1e-4,
    );
    check_op(
        Op::LayerNorm(NormAttrs {
            axis: 1,
            epsilon: 1e-5,
        }),
        vec![
            f32t(vec![4, 384], 13),
            f32t(vec![384], 14),
            f32t(vec![384], 15),
        ],
        1e-4,
    );
    check_op(
        Op::RmsNorm(NormAttrs {
            axis: 1,
            epsilon: 1e-6,
        }),
        vec![f32t(vec![4, 96], 16), f32t(vec![96], 17)],
        1e-4,
    );
    check_op(
        Op::Reduce(ReduceAttrs {
            kind: ReduceKind::Mean,
            axes: vec![0, 2],
            keepdims: true,
        }),
        vec![f32t(vec![3, 4, 5], 18)],
        1e-5,
    );
    check_op(
        Op::Transpose(TransposeAttrs {
            perm: vec![2, 0, 1],
        }),
        vec![f32t(vec![2, 3, 4], 19)],
        0.0,
    );
    check_op(
        Op::Slice(SliceAttrs {
            axes: vec![1],
            starts: vec![3],
            ends: vec![-1],
            steps: vec![-2],
        }),
        vec![f32t(vec![2, 5], 20)],
        0.0,
    );
    check_op(
        Op::Concat(AxisAttrs { axis: 1 }),
        vec![f32t(vec![2, 1, 3], 21), f32t(vec![2, 2, 3], 22)],
        0.0,
    );
    check_op(
        Op::Gather(AxisAttrs { axis: 0 }),
        vec![
            f32t(vec![10, 4], 23),
            Tensor::i64(vec![2, 2], vec![0, 9, -1, 3]),
        ],
        0.0,
    );
    check_op(
        Op::Where,
        vec![
            Tensor::bool(vec![3], vec![true, false, true]),
            f32t(vec![2, 3], 24),
            f32t(vec![3], 25),
        ],
        0.0,
    );
    check_op(
        Op::Cast(CastAttrs { to: DType::I64 }),
        vec![Tensor::f32(vec![4], vec![1.7, -2.2, 3.0, 0.0])],
        0.0,
    );
    check_op(
        Op::Expand(ExpandAttrs {
            shape: vec![2, 3, 4],
        }),
        vec![f32t(vec![3, 1], 26)],
        0.0,
    );
}

#[test]
fn a_single_rank_device_runs_an_unsplit_plan() {
    if skip_reason().is_some() {
        return;
    }
    let (plan, inputs) = mlp_plan(1);
    let want = reference(&plan, &inputs);
    let dev = CudaDevice::open(0, 1, CommSpec::Single { device: 0 }).unwrap();
    let store = WeightStore::with_dir(".");
    let (out, stats) = run_one_rank(dev, &plan, &store, &inputs, 0).unwrap();
    let out = out[0].as_ref().expect("rank 0 computes the output");
    let err = rel_err(out, &want[0]);
    assert!(err < 1e-5, "relative error {err}");
    assert_eq!(stats.collectives, 1);
}

/// Runs a plan on `worlds` virtual ranks and compares with the reference executor.
fn check_virtual_ranks(
    name: &str,
    worlds: &[usize],
    build: fn(usize) -> (Plan, BTreeMap<String, Tensor>),
) {
    let opts = RunOptions {
        backend: DeviceKind::Cuda,
    };
    for &world in worlds {
        let (plan, inputs) = build(world);
        let want = reference(&plan, &inputs);
        let store = WeightStore::with_dir(".");
        let (outs, stats) = run_plan(&plan, &store, &inputs, &opts).unwrap();
        for (g, w) in outs.iter().zip(&want) {
            let err = rel_err(g, w);
            assert!(err < 1e-5, "{name} on {world} ranks: relative error {err}");
        }
        assert_eq!(stats.backend, "cuda");
        assert_eq!(stats.ranks.len(), world, "{name}: per-rank statistics");
        assert!(stats.ranks.iter().all(|r| r.peak_live_bytes > 0));
    }
}

#[test]
fn virtual_ranks_match_the_reference_executor() {
    if skip_reason().is_some() {
        return;
    }
    // Sizes: the MLP's hidden 24 splits 2, 3, 4 and 8 ways; the layouts' 12 and the
    // vocabulary's 12 split 2, 3 and 4 ways.
    check_virtual_ranks("mlp", &[2, 3, 4, 8], mlp_plan);
    // Input slices, all-to-all, all-gather, LocalSlice, ScaleToPartial, reduce-scatter.
    check_virtual_ranks("layouts", &[2, 3, 4], layouts_plan);
    // Vocabulary-parallel gather and its all-reduce.
    check_virtual_ranks("embedding", &[2, 3, 4], embedding_plan);
}
