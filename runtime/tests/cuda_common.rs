//! Helpers shared by the CUDA integration tests (included with `#[path]` by cuda_cpu.rs and
//! cuda_gpu.rs; as its own test target it only checks the reference erf).
#![cfg(feature = "cuda")]
#![allow(dead_code)]
use std::collections::BTreeMap;
use tessera_ir::graph::TensorKind;
use tessera_ir::layout::Layout;
use tessera_ir::op::{GeluAttrs, MatMulAttrs};
use tessera_ir::plan::*;
use tessera_ir::{DType, Graph, Op, Tensor, Weight, WeightData};

/// Returns why CUDA tests must be skipped here, printing the standard line.
pub fn skip_reason() -> Option<String> {
    let r = tessera_runtime::cuda::probe::unavailable_reason();
    if let Some(why) = &r {
        println!("skipping: no CUDA driver found ({why})");
    }
    r
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matmul_host(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

/// Exact GELU, 0.5·x·(1 + erf(x/√2)), in f64 (std has no erf; see [`erf_series`]).
fn gelu_host(x: f32) -> f32 {
    let erf = erf_series(x as f64 / std::f64::consts::SQRT_2);
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

/// erf by its Maclaurin series (converges quickly for |z| < 3).
fn erf_series(z: f64) -> f64 {
    if z.abs() > 3.0 {
        return z.signum();
    }
    let mut term = z;
    let mut sum = z;
    for n in 1..60 {
        term *= -z * z / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// A two-layer MLP `gelu(x·W1)·W2` partitioned Megatron-style over `world` ranks: W1
/// column-split, W2 row-split, one all-reduce. Returns the plan, the weights, the input
/// and the host reference output.
pub fn mlp_plan(world: usize) -> (Plan, BTreeMap<String, Tensor>, Tensor, Vec<f32>) {
    let (m, d, h) = (4usize, 8usize, 16usize);
    let x = values(m * d, 1);
    let w1 = values(d * h, 2);
    let w2 = values(h * d, 3);
    let mut g = Graph::new();
    let xt = g.add_input("x", DType::F32, vec![m, d]);
    let inline = |name: &str, shape: Vec<usize>| Weight {
        name: name.into(),
        dtype: DType::F32,
        shape,
        data: WeightData::File {
            path: "none".into(),
            offset: 0,
            length: 0,
        },
    };
    let w1t = g.add_weight(inline("w1", vec![d, h]));
    let w2t = g.add_weight(inline("w2", vec![h, d]));
    let ht = g.add_tensor("h", DType::F32, vec![m, h], TensorKind::Activation);
    let at = g.add_tensor("a", DType::F32, vec![m, h], TensorKind::Activation);
    let yt = g.add_tensor("y", DType::F32, vec![m, d], TensorKind::Activation);
    let n0 = g.add_node("mm1", Op::MatMul(MatMulAttrs {}), vec![xt, w1t], vec![ht]);
    let n1 = g.add_node(
        "gelu",
        Op::Gelu(GeluAttrs {
            tanh_approximation: false,
        }),
        vec![ht],
        vec![at],
    );
    let n2 = g.add_node("mm2", Op::MatMul(MatMulAttrs {}), vec![at, w2t], vec![yt]);
    g.outputs.push(yt);
    let hl = h / world;
    let pv = |tensor, layout, shape: Vec<usize>| PlanValue {
        tensor,
        layout,
        shape,
        dtype: DType::F32,
    };
    let values_ = vec![
        pv(xt, Layout::Replicated, vec![m, d]), // 0
        pv(w1t, Layout::Split(1), vec![d, hl]), // 1
        pv(ht, Layout::Split(1), vec![m, hl]),  // 2
        pv(at, Layout::Split(1), vec![m, hl]),  // 3
        pv(w2t, Layout::Split(0), vec![hl, d]), // 4
        pv(yt, Layout::Partial, vec![m, d]),    // 5
        pv(yt, Layout::Replicated, vec![m, d]), // 6
    ];
    let step = |kind, inputs: Vec<u32>, outputs: Vec<u32>| Step {
        kind,
        inputs: inputs.into_iter().map(ValueId).collect(),
        outputs: outputs.into_iter().map(ValueId).collect(),
        layer: None,
    };
    let ranks = (0..world)
        .map(|r| RankProgram {
            rank: r,
            steps: vec![
                step(
                    StepKind::Input {
                        tensor: xt,
                        slice: None,
                    },
                    vec![],
                    vec![0],
                ),
                step(
                    StepKind::LoadWeight {
                        tensor: w1t,
                        slice: Some(AxisSlice {
                            axis: 1,
                            start: r * hl,
                            end: (r + 1) * hl,
                        }),
                    },
                    vec![],
                    vec![1],
                ),
                step(
                    StepKind::Compute {
                        node: n0,
                        op: Op::MatMul(MatMulAttrs {}),
                    },
                    vec![0, 1],
                    vec![2],
                ),
                step(
                    StepKind::Compute {
                        node: n1,
                        op: Op::Gelu(GeluAttrs {
                            tanh_approximation: false,
                        }),
                    },
                    vec![2],
                    vec![3],
                ),
                step(
                    StepKind::LoadWeight {
                        tensor: w2t,
                        slice: Some(AxisSlice {
                            axis: 0,
                            start: r * hl,
                            end: (r + 1) * hl,
                        }),
                    },
                    vec![],
                    vec![4],
                ),
                step(
                    StepKind::Compute {
                        node: n2,
                        op: Op::MatMul(MatMulAttrs {}),
                    },
                    vec![3, 4],
                    vec![5],
                ),
                step(
                    StepKind::Collective {
                        collective: CollectiveKind::AllReduce,
                        axis: None,
                        to_axis: None,
                        group: (0..world).collect(),
                        bytes: (m * d * 4) as u64,
                    },
                    vec![5],
                    vec![6],
                ),
            ],
        })
        .collect();
    let plan = Plan {
        format_version: FORMAT_VERSION,
        source: SourceModel {
            path: "mlp.onnx".into(),
            sha256: String::new(),
            weight_files: Default::default(),
        },
        input_shapes: [("x".to_string(), vec![m, d])].into_iter().collect(),
        mesh: Mesh::tp(world),
        cost_model: CostModel {
            name: "custom".into(),
            alpha_s: 0.0,
            beta_bytes_per_s: 1.0,
            flops_per_s: 1.0,
        },
        objective: Objective {
            kind: ObjectiveKind::Memory,
            memory_per_device: None,
            pins: BTreeMap::new(),
        },
        graph: g,
        layouts: vec![],
        values: values_,
        outputs: vec![ValueId(6)],
        ranks,
        collectives: vec![],
        weight_shards: vec![],
        estimates: vec![],
        layers: None,
        search: SearchStats::default(),
        summary: PlanSummary::default(),
    };
    let hidden: Vec<f32> = matmul_host(&x, &w1, m, d, h)
        .into_iter()
        .map(gelu_host)
        .collect();
    let want = matmul_host(&hidden, &w2, m, h, d);
    let weights = [
        ("w1".to_string(), Tensor::f32(vec![d, h], w1)),
        ("w2".to_string(), Tensor::f32(vec![h, d], w2)),
    ]
    .into_iter()
    .collect();
    (plan, weights, Tensor::f32(vec![m, d], x), want)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn erf_series_is_accurate() {
    // erf(0.5) = 0.5204998778130465, erf(1) = 0.8427007929497149
    assert!((erf_series(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
    assert!((erf_series(1.0) - 0.842_700_792_949_714_9).abs() < 1e-12);
}
