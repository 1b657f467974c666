//! The CPU device's fusion pass: which chains it fuses (and which it must leave alone), and
//! that fused results equal the reference executor's unfused ones (bit for bit for the
//! elementwise epilogues; the attention's GEMMs read strided views, whose blocking may round
//! differently in the last bit).
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorId};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

fn scalar(g: &mut Graph, name: &str, v: f32) -> TensorId {
    inline_weight(g, name, Tensor::f32(vec![], vec![v]))
}

/// Runs the graph as a one-device plan and returns the fused kernels it ran, by kind, and
/// the plan steps they replaced, after checking the outputs against the reference executor:
/// equal when `exact`, else within 1e-6 relative.
fn run_fused_steps(
    g: Graph,
    inputs: &BTreeMap<String, Tensor>,
    exact: bool,
) -> (BTreeMap<&'static str, usize>, usize) {
    let plan = single_rank_plan(g);
    let want = reference(&plan, inputs);
    let (got, stats) = run_plan(
        &plan,
        &WeightStore::with_dir("."),
        inputs,
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("run_plan: {e}"));
    if exact {
        assert_eq!(got, want, "fused run differs from the reference");
    } else {
        for (a, b) in got.iter().zip(&want) {
            let err = rel_err(a, b);
            assert!(
                err <= 1e-6,
                "fused run differs from the reference by {err:e}"
            );
        }
    }
    assert_eq!(stats.ranks[0].steps, plan.ranks[0].steps.len());
    (stats.ranks[0].fused.clone(), stats.ranks[0].fused_steps)
}

/// [`run_fused_steps`]'s kernels.
fn run_fused(
    g: Graph,
    inputs: &BTreeMap<String, Tensor>,
    exact: bool,
) -> BTreeMap<&'static str, usize> {
    run_fused_steps(g, inputs, exact).0
}

/// x·W + b followed by the canonical GELU op of the erf form (what the compiler's
/// canonicalisation makes of every export's erf-GELU spelling); `keep_mm` / `keep_y` also
/// make the MatMul output / the biased value graph outputs.
fn gelu_graph(keep_mm: bool, keep_y: bool) -> (Graph, BTreeMap<String, Tensor>) {
    gelu_graph_of(false, keep_mm, keep_y)
}

/// [`gelu_graph`] with the GELU's tanh form when `tanh`. The product has 80 rows, more than
/// a packed weight serves ([`tessera_kernels::PACKED_MAX_ROWS`]): the weight stays an input.
fn gelu_graph_of(tanh: bool, keep_mm: bool, keep_y: bool) -> (Graph, BTreeMap<String, Tensor>) {
    gelu_graph_rows((40, 8, 12), tanh, keep_mm, keep_y)
}

/// [`gelu_graph_of`] over `[2, rows, k]` by a `[k, n]` weight.
fn gelu_graph_rows(
    (rows, k, n): (usize, usize, usize),
    tanh: bool,
    keep_mm: bool,
    keep_y: bool,
) -> (Graph, BTreeMap<String, Tensor>) {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![2, rows, k]);
    let w = inline_weight(&mut g, "w", rand_f32(&[k, n], 1));
    let b = inline_weight(&mut g, "b", rand_f32(&[n], 2));
    let s = vec![2, rows, n];
    let mm = f32_node(
        &mut g,
        "mm",
        Op::MatMul(MatMulAttrs {}),
        vec![x, w],
        s.clone(),
    );
    let y = binary_node(&mut g, "bias", BinaryOp::Add, [b, mm], s.clone());
    let gelu = Op::Gelu(GeluAttrs {
        tanh_approximation: tanh,
    });
    let out = f32_node(&mut g, "gelu", gelu, vec![y], s);
    g.outputs.push(out);
    if keep_mm {
        g.outputs.push(mm);
    }
    if keep_y {
        g.outputs.push(y);
    }
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[2, rows, k], 3))]);
    (g, inputs)
}

#[test]
fn matmul_bias_gelu_fuses_into_one_kernel() {
    // Both GELU forms (the tanh form is GPT-2's): bitwise equal to the unfused run.
    for tanh in [false, true] {
        let (g, inputs) = gelu_graph_of(tanh, false, false);
        let (fused, steps) = run_fused_steps(g, &inputs, true);
        assert_eq!(fused, BTreeMap::from([("fused MatMul+Bias+Gelu", 1)]));
        assert_eq!(steps, 3, "MatMul, bias Add and the GELU");
    }
}

#[test]
fn few_row_products_hold_their_weight_packed() {
    // Six rows by a [160, 112] weight (a panel and a narrower one, k past a block): the
    // weight is packed when the plan is loaded and its load step joins the fused kernel;
    // the product's sums are blocked differently from the crate's, so the result equals
    // the reference within rounding, and the rank holds the weight's own bytes.
    let shape = (3, 160, 112);
    if !tessera_kernels::packed_matmul_suits(6, 160, 112) {
        eprintln!("skipped: no AVX-512F or AVX2 and FMA");
        return;
    }
    let (g, inputs) = gelu_graph_rows(shape, false, false, false);
    let (fused, steps) = run_fused_steps(g, &inputs, false);
    assert_eq!(fused, BTreeMap::from([("fused MatMul+Bias+Gelu", 1)]));
    assert_eq!(steps, 4, "the weight's load, MatMul, bias Add and the GELU");
    // A bare product with its MatMul output kept: packed alone; the bias Add and the GELU
    // after it form the elementwise tree that reads it.
    let (g, inputs) = gelu_graph_rows(shape, false, true, false);
    let (fused, steps) = run_fused_steps(g, &inputs, false);
    let want = BTreeMap::from([("fused Elementwise", 1), ("packed MatMul", 1)]);
    assert_eq!((fused, steps), (want, 4));
}

#[test]
fn few_row_gemms_hold_their_weight_packed() {
    // A classifier's Gemm, two rows by a transposed [112, 160] weight plus a bias C, and
    // the same without transposing B or without C: each holds its weight packed (the
    // load step joins the kernel) and equals the reference within rounding. Alpha other
    // than 1 stays on the Gemm kernel.
    if !tessera_kernels::packed_matmul_suits(2, 160, 112) {
        eprintln!("skipped: no AVX-512F or AVX2 and FMA");
        return;
    }
    let (k, n) = (160, 112);
    let gemm = |trans_b: bool, bias: bool, alpha: f32| {
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, vec![2, k]);
        let ws = if trans_b { [n, k] } else { [k, n] };
        let w = inline_weight(&mut g, "w", rand_f32(&ws, 1));
        let mut ins = vec![x, w];
        if bias {
            ins.push(inline_weight(&mut g, "c", rand_f32(&[n], 2)));
        }
        let attrs = GemmAttrs {
            alpha,
            beta: 1.0,
            trans_a: false,
            trans_b,
        };
        let out = f32_node(&mut g, "gemm", Op::Gemm(attrs), ins, vec![2, n]);
        g.outputs.push(out);
        let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[2, k], 3))]);
        run_fused_steps(g, &inputs, false)
    };
    let held = |name: &'static str| (BTreeMap::from([(name, 1)]), 2);
    assert_eq!(gemm(true, true, 1.0), held("fused MatMul+Bias"));
    assert_eq!(gemm(false, true, 1.0), held("fused MatMul+Bias"));
    assert_eq!(gemm(true, false, 1.0), held("packed MatMul"));
    assert_eq!(gemm(true, true, 0.5), (BTreeMap::new(), 0));
}

#[test]
fn values_read_outside_the_chain_are_never_fused_away() {
    // The MatMul output is a graph output: no kernel may absorb the MatMul; the bias Add
    // and the GELU after it still form an elementwise tree that reads it.
    let (g, inputs) = gelu_graph(true, false);
    assert_eq!(
        run_fused_steps(g, &inputs, true),
        (BTreeMap::from([("fused Elementwise", 1)]), 2)
    );
    // The biased value is an output: MatMul+Bias still fuses (it is that kernel's output),
    // the GELU reading it stays unfused.
    let (g, inputs) = gelu_graph(false, true);
    assert_eq!(
        run_fused(g, &inputs, true),
        BTreeMap::from([("fused MatMul+Bias", 1)])
    );
}

/// BERT-style self-attention on q, k, v inputs [B, S, H·D], with a [B, 1, 1, S] mask and
/// the residual Add + LayerNorm after the head merge.
#[test]
fn attention_and_residual_layer_norm_fuse() {
    let (bsz, s, h, d) = (2, 5, 3, 4);
    let hd = h * d;
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![bsz, s, hd]);
    let k = g.add_input("k", DType::F32, vec![bsz, s, hd]);
    let v = g.add_input("v", DType::F32, vec![bsz, s, hd]);
    let mask = g.add_input("mask", DType::F32, vec![bsz, 1, 1, s]);
    let c = scalar(&mut g, "scale", (d as f32).sqrt());
    let gamma = inline_weight(&mut g, "gamma", rand_f32(&[hd], 4));
    let beta = inline_weight(&mut g, "beta", rand_f32(&[hd], 5));
    let heads = |g: &mut Graph, x: TensorId, name: &str, perm: Vec<usize>| {
        let r = Op::Reshape(ReshapeAttrs {
            shape: vec![bsz, s, h, d],
        });
        let r = f32_node(g, &format!("{name}_r"), r, vec![x], vec![bsz, s, h, d]);
        let shape: Vec<usize> = perm.iter().map(|&p| [bsz, s, h, d][p]).collect();
        let t = Op::Transpose(TransposeAttrs { perm });
        f32_node(g, &format!("{name}_t"), t, vec![r], shape)
    };
    let q4 = heads(&mut g, q, "q", vec![0, 2, 1, 3]);
    let kt = heads(&mut g, k, "k", vec![0, 2, 3, 1]);
    let v4 = heads(&mut g, v, "v", vec![0, 2, 1, 3]);
    let sc = vec![bsz, h, s, s];
    let mm = Op::MatMul(MatMulAttrs {});
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![q4, kt], sc.clone());
    let z = binary_node(&mut g, "scale", BinaryOp::Div, [scores, c], sc.clone());
    let zm = binary_node(&mut g, "mask", BinaryOp::Add, [z, mask], sc.clone());
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![zm], sc);
    let o = f32_node(&mut g, "pv", mm, vec![p, v4], vec![bsz, h, s, d]);
    let t = Op::Transpose(TransposeAttrs {
        perm: vec![0, 2, 1, 3],
    });
    let o2 = f32_node(&mut g, "merge_t", t, vec![o], vec![bsz, s, h, d]);
    let r = Op::Reshape(ReshapeAttrs {
        shape: vec![bsz, s, hd],
    });
    let ctx = f32_node(&mut g, "merge_r", r, vec![o2], vec![bsz, s, hd]);
    let res = binary_node(
        &mut g,
        "residual",
        BinaryOp::Add,
        [ctx, q],
        vec![bsz, s, hd],
    );
    let ln = Op::LayerNorm(NormAttrs {
        axis: 2,
        epsilon: 1e-12,
    });
    let y = f32_node(&mut g, "ln", ln, vec![res, gamma, beta], vec![bsz, s, hd]);
    g.outputs.push(y);
    let mut mv = vec![0f32; bsz * s];
    mv[s - 1] = -10000.0;
    let inputs = BTreeMap::from([
        ("q".to_string(), rand_f32(&[bsz, s, hd], 6)),
        ("k".to_string(), rand_f32(&[bsz, s, hd], 7)),
        ("v".to_string(), rand_f32(&[bsz, s, hd], 8)),
        ("mask".to_string(), Tensor::f32(vec![bsz, 1, 1, s], mv)),
    ]);
    let (fused, steps) = run_fused_steps(g, &inputs, false);
    assert_eq!(
        fused,
        BTreeMap::from([("fused Attention", 1), ("fused Add+LayerNorm", 1)])
    );
    // Attention: 3 × (Reshape + Transpose), QKᵀ, Div, mask Add, Softmax, ·V, Transpose +
    // Reshape (13); then the residual Add and the LayerNorm: every compute step.
    assert_eq!(steps, 15);
}

/// The residual sum after a row-parallel layer's all-reduce, `u = (y + bias) + r` over
/// `[2, 3, 16]`, with a norm's scale and bias beside it: (graph, u, gamma, beta, inputs).
fn bias_residual_graph() -> (
    Graph,
    TensorId,
    TensorId,
    TensorId,
    BTreeMap<String, Tensor>,
) {
    let shape = vec![2, 3, 16];
    let f = DType::F32;
    let mut g = Graph::new();
    let y = g.add_input("y", f, shape.clone());
    let r = g.add_input("r", f, shape.clone());
    let c = inline_weight(&mut g, "c", rand_f32(&[16], 1));
    let gamma = inline_weight(&mut g, "gamma", rand_f32(&[16], 2));
    let beta = inline_weight(&mut g, "beta", rand_f32(&[16], 3));
    let t = binary_node(&mut g, "bias", BinaryOp::Add, [c, y], shape.clone());
    let u = binary_node(&mut g, "residual", BinaryOp::Add, [r, t], shape.clone());
    let inputs = BTreeMap::from([
        ("y".to_string(), rand_f32(&shape, 4)),
        ("r".to_string(), rand_f32(&shape, 5)),
    ]);
    (g, u, gamma, beta, inputs)
}

/// After a row-parallel layer's all-reduce: `LayerNorm((y + bias) + residual)` is one kernel,
/// bitwise equal to the three unfused ops.
#[test]
fn bias_residual_layer_norm_fuse() {
    let (mut g, u, gamma, beta, inputs) = bias_residual_graph();
    let ln = Op::LayerNorm(NormAttrs {
        axis: 2,
        epsilon: 1e-5,
    });
    let out = f32_node(&mut g, "ln", ln, vec![u, gamma, beta], vec![2, 3, 16]);
    g.outputs.push(out);
    let (fused, steps) = run_fused_steps(g, &inputs, true);
    assert_eq!(fused, BTreeMap::from([("fused Add+LayerNorm", 1)]));
    assert_eq!(steps, 3, "the bias Add, the residual Add and the LayerNorm");
}

/// A pre-norm layer's residual stream: the sum `(y + bias) + residual` is normalised (by a
/// LayerNorm or an RMSNorm) and also read after the norm (by the next residual add, and as
/// a graph output): one kernel writes both, bitwise equal to the unfused ops. A reader of
/// the sum before the norm keeps the ops apart (the kernel runs where the norm was).
#[test]
fn residual_norm_keeps_the_sum_read_after_it() {
    for (rms, read_before) in [(false, false), (false, true), (true, false), (true, true)] {
        let (mut g, u, gamma, beta, inputs) = bias_residual_graph();
        let shape = vec![2, 3, 16];
        if read_before {
            let early = binary_node(&mut g, "early", BinaryOp::Mul, [u, u], shape.clone());
            g.outputs.push(early);
        }
        let attrs = NormAttrs {
            axis: 2,
            epsilon: 1e-5,
        };
        let (norm, ins) = match rms {
            true => (Op::RmsNorm(attrs), vec![u, gamma]),
            false => (Op::LayerNorm(attrs), vec![u, gamma, beta]),
        };
        let n = f32_node(&mut g, "norm", norm, ins, shape.clone());
        let next = binary_node(&mut g, "next", BinaryOp::Add, [u, n], shape);
        g.outputs.push(next);
        g.outputs.push(u);
        let (fused, _) = run_fused_steps(g, &inputs, true);
        let want = match read_before {
            false => 1,
            true => 0,
        };
        let name = if rms {
            "fused Add+RmsNorm"
        } else {
            "fused Add+LayerNorm"
        };
        assert_eq!(
            fused.get(name).copied().unwrap_or(0),
            want,
            "rms: {rms}, read before: {read_before}, {fused:?}"
        );
    }
}

/// Llama: q `[B, H, S, D]` and k, v `[B, Hk, S, D]` come already split into heads (the rotary
/// embedding works on them), k and v repeated over the query-head groups by Reshape +
/// Expand + Reshape (grouped-query attention), the scores multiplied by the scale and a
/// causal mask added: one fused attention, matching the reference executor.
#[test]
fn head_major_grouped_query_attention_fuses() {
    let (bsz, s, h, hk, d) = (2, 5, 4, 2, 3);
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![bsz, h, s, d]);
    let k = g.add_input("k", DType::F32, vec![bsz, hk, s, d]);
    let v = g.add_input("v", DType::F32, vec![bsz, hk, s, d]);
    let mask = g.add_input("mask", DType::F32, vec![1, 1, s, s]);
    let c = scalar(&mut g, "scale", 1.0 / (d as f32).sqrt());
    let repeat = |g: &mut Graph, x: TensorId, name: &str| {
        let shape = vec![bsz, hk, 1, s, d];
        let r = Op::Reshape(ReshapeAttrs {
            shape: shape.clone(),
        });
        let r = f32_node(g, &format!("{name}_r1"), r, vec![x], shape);
        let shape = vec![bsz, hk, h / hk, s, d];
        let e = Op::Expand(ExpandAttrs {
            shape: shape.clone(),
        });
        let e = f32_node(g, &format!("{name}_e"), e, vec![r], shape);
        let shape = vec![bsz, h, s, d];
        let r = Op::Reshape(ReshapeAttrs {
            shape: shape.clone(),
        });
        f32_node(g, &format!("{name}_r2"), r, vec![e], shape)
    };
    let k4 = repeat(&mut g, k, "k");
    let v4 = repeat(&mut g, v, "v");
    let t = Op::Transpose(TransposeAttrs {
        perm: vec![0, 1, 3, 2],
    });
    let kt = f32_node(&mut g, "k_t", t, vec![k4], vec![bsz, h, d, s]);
    let sc = vec![bsz, h, s, s];
    let mm = Op::MatMul(MatMulAttrs {});
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![q, kt], sc.clone());
    let z = binary_node(&mut g, "scale", BinaryOp::Mul, [scores, c], sc.clone());
    let zm = binary_node(&mut g, "mask", BinaryOp::Add, [z, mask], sc.clone());
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![zm], sc);
    let o = f32_node(&mut g, "pv", mm, vec![p, v4], vec![bsz, h, s, d]);
    g.outputs.push(o);
    let causal: Vec<f32> = (0..s * s)
        .map(|e| if e % s > e / s { f32::MIN } else { 0.0 })
        .collect();
    let inputs = BTreeMap::from([
        ("q".to_string(), rand_f32(&[bsz, h, s, d], 9)),
        ("k".to_string(), rand_f32(&[bsz, hk, s, d], 10)),
        ("v".to_string(), rand_f32(&[bsz, hk, s, d], 11)),
        ("mask".to_string(), Tensor::f32(vec![1, 1, s, s], causal)),
    ]);
    let (fused, steps) = run_fused_steps(g, &inputs, false);
    assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]));
    // 2 × (Reshape + Expand + Reshape), Kᵀ, QKᵀ, Mul, mask Add, Softmax, ·V.
    assert_eq!(steps, 12);
}

/// Llama's rotary embedding, `x·cos + rotate_half(x)·sin` spelled as Slice, Slice, Neg,
/// Concat, Mul, Mul, Add (or without the Neg, the sign folded into `sin`, as the opset-23
/// exports spell it): one kernel, bitwise equal to the reference executor.
#[test]
fn rotary_embedding_fuses() {
    for negate in [true, false] {
        let (bsz, h, s, d) = (2, 3, 5, 8);
        let shape = vec![bsz, h, s, d];
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, shape.clone());
        let cos = inline_weight(&mut g, "cos", rand_f32(&[1, 1, s, d], 12));
        let sin = inline_weight(&mut g, "sin", rand_f32(&[1, 1, s, d], 13));
        let half_shape = vec![bsz, h, s, d / 2];
        let half = |g: &mut Graph, name: &str, start: i64, end: i64| {
            let op = Op::Slice(SliceAttrs {
                axes: vec![3],
                starts: vec![start],
                ends: vec![end],
                steps: vec![1],
            });
            f32_node(g, name, op, vec![x], half_shape.clone())
        };
        let x1 = half(&mut g, "x1", 0, d as i64 / 2);
        let x2 = half(&mut g, "x2", d as i64 / 2, d as i64);
        let hi = if negate {
            let neg = Op::Unary(UnaryAttrs { kind: UnaryOp::Neg });
            f32_node(&mut g, "neg", neg, vec![x2], half_shape.clone())
        } else {
            x2
        };
        let cat = Op::Concat(AxisAttrs { axis: 3 });
        let rot = f32_node(&mut g, "rot", cat, vec![hi, x1], shape.clone());
        let a = binary_node(&mut g, "xc", BinaryOp::Mul, [x, cos], shape.clone());
        let b = binary_node(&mut g, "rs", BinaryOp::Mul, [sin, rot], shape.clone());
        let y = binary_node(&mut g, "y", BinaryOp::Add, [b, a], shape.clone());
        g.outputs.push(y);
        let inputs = BTreeMap::from([("x".to_string(), rand_f32(&shape, 14))]);
        let (fused, steps) = run_fused_steps(g, &inputs, true);
        assert_eq!(
            fused,
            BTreeMap::from([("fused Rotary", 1)]),
            "negate {negate}"
        );
        assert_eq!(steps, if negate { 7 } else { 6 });
    }
}
