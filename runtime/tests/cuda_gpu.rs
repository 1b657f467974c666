//! GPU tests of the CUDA backend. Each skips (printing why) when no CUDA driver, device,
//! NVRTC or cuBLAS is present, which is the case on the machines this was written on:
//! these tests are unverified on a GPU until run on one.
#![cfg(feature = "cuda")]
#[path = "cuda_common.rs"]
mod common;

use common::{max_abs_diff, mlp_plan, skip_reason, values};
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Op, Tensor};
use tessera_runtime::cuda::buffer::DeviceTensor;
use tessera_runtime::cuda::context::Gpu;
use tessera_runtime::cuda::ops::run_op;
use tessera_runtime::cuda::{CommSpec, CudaExecutor, NamedWeights, VirtualRanks};

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
    let outs: Vec<_> = want.iter().map(|t| (t.dtype, t.shape.clone())).collect();
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
    let n = shape.iter().product();
    Tensor::f32(shape, values(n, seed))
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
fn single_rank_executor_runs_an_unsplit_plan() {
    if skip_reason().is_some() {
        return;
    }
    let (plan, weights, x, want) = mlp_plan(1);
    let mut ex = CudaExecutor::new(0, 1, CommSpec::Single { device: 0 }).unwrap();
    let inputs: BTreeMap<String, Tensor> = [("x".to_string(), x)].into_iter().collect();
    let out = ex.run(&plan, &NamedWeights(weights), &inputs).unwrap();
    let d = max_abs_diff(out[0].as_f32().unwrap(), &want);
    assert!(d < 1e-4, "max diff {d}");
}

#[test]
fn virtual_ranks_match_the_host_reference() {
    if skip_reason().is_some() {
        return;
    }
    for world in [2, 4] {
        let (plan, weights, x, want) = mlp_plan(world);
        let vr = VirtualRanks::new(0, world).unwrap();
        let inputs: BTreeMap<String, Tensor> = [("x".to_string(), x)].into_iter().collect();
        let outs = vr
            .run(&plan, &NamedWeights(weights.clone()), &inputs)
            .unwrap();
        assert_eq!(outs.len(), world);
        for (r, o) in outs.iter().enumerate() {
            let d = max_abs_diff(o[0].as_f32().unwrap(), &want);
            assert!(d < 1e-4, "world {world}, rank {r}: max diff {d}");
        }
    }
}
