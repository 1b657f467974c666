//! The fusion pass on the attention spellings of real exports: torch dynamo's SDPA
//! decomposition (q and Kᵀ each scaled, an additive mask, `Where(IsNaN(p), 0, p)` after the
//! Softmax) and the ONNX `Attention` op (opset 23). Each runs as one fused kernel whose
//! result equals the reference executor's unfused one, including a query row that the mask
//! hides from every key (zeros, not NaN), and is left alone where a value it would hide is
//! read elsewhere or the op has features the kernel lacks.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorData, TensorId};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// Batch, sequence, query heads, kv heads, head size.
const B: usize = 2;
const S: usize = 6;
const H: usize = 4;
const HK: usize = 2;
const D: usize = 5;
/// The query (of batch 1) that sees no key.
const HIDDEN_ROW: usize = 3;

/// Runs the graph as a one-device plan: the fused kernels by kind and the outputs, after
/// checking them against the reference executor (finite, within 1e-6 relative).
fn run_checked(
    g: Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> (BTreeMap<&'static str, usize>, usize, Vec<Tensor>) {
    let plan = single_rank_plan(g);
    let want = reference(&plan, inputs);
    let (got, stats) = run_plan(
        &plan,
        &WeightStore::with_dir("."),
        inputs,
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("run_plan: {e}"));
    for (a, b) in got.iter().zip(&want) {
        if a.dtype == DType::F32 {
            let (x, y) = (a.as_f32().unwrap(), b.as_f32().unwrap());
            assert!(
                x.iter().chain(y).all(|v| v.is_finite()),
                "non-finite output"
            );
        }
        let err = rel_err(a, b);
        assert!(
            err <= 1e-6,
            "fused run differs from the reference by {err:e}"
        );
    }
    (
        stats.ranks[0].fused.clone(),
        stats.ranks[0].fused_steps,
        got,
    )
}

fn reshape(g: &mut Graph, name: &str, x: TensorId, shape: Vec<usize>) -> TensorId {
    let op = Op::Reshape(ReshapeAttrs {
        shape: shape.clone(),
    });
    f32_node(g, name, op, vec![x], shape)
}

fn transpose(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    perm: Vec<usize>,
    shape: Vec<usize>,
) -> TensorId {
    f32_node(
        g,
        name,
        Op::Transpose(TransposeAttrs { perm }),
        vec![x],
        shape,
    )
}

/// `[B, HK, S, D]` repeated to `[B, H, S, D]` by Reshape + Expand + Reshape (3 steps).
fn repeat_kv(g: &mut Graph, name: &str, x: TensorId) -> TensorId {
    let r = reshape(g, &format!("{name}_r1"), x, vec![B, HK, 1, S, D]);
    let shape = vec![B, HK, H / HK, S, D];
    let e = Op::Expand(ExpandAttrs {
        shape: shape.clone(),
    });
    let e = f32_node(g, &format!("{name}_e"), e, vec![r], shape);
    reshape(g, &format!("{name}_r2"), e, vec![B, H, S, D])
}

/// Heads merged back: Transpose [0, 2, 1, 3] + Reshape to `shape` (2 steps).
fn merge(g: &mut Graph, x: TensorId, shape: Vec<usize>) -> TensorId {
    let t = transpose(g, "merge_t", x, vec![0, 2, 1, 3], vec![B, S, H, D]);
    reshape(g, "merge_r", t, shape)
}

/// q, k, v and the causal keep pattern with query `HIDDEN_ROW` of batch 1 seeing nothing.
fn qkv_and_keep(seed: u64) -> (BTreeMap<String, Tensor>, Vec<bool>) {
    let keep = (0..B * S * S)
        .map(|e| {
            let (b, i, j) = (e / (S * S), e / S % S, e % S);
            j <= i && !(b == 1 && i == HIDDEN_ROW)
        })
        .collect();
    let inputs = BTreeMap::from([
        ("q".to_string(), rand_f32(&[B, H, S, D], seed)),
        ("k".to_string(), rand_f32(&[B, HK, S, D], seed + 1)),
        ("v".to_string(), rand_f32(&[B, HK, S, D], seed + 2)),
    ]);
    (inputs, keep)
}

/// Asserts the hidden query's output rows (batch 1, every head, merged `[B·S, H·D]`) are 0.
fn assert_hidden_row_zero(out: &Tensor) {
    let v = out.as_f32().unwrap();
    let o = (S + HIDDEN_ROW) * H * D;
    assert_eq!(&v[o..o + H * D], &[0.0; H * D]);
}

/// torch dynamo's `scaled_dot_product_attention` (real/llama, mistral, gpt2, …): Mul of q
/// and of Kᵀ by √scale (Kᵀ as Reshape [B·H, S, D], Transpose [0, 2, 1], Reshape), additive
/// mask `[B, 1, S, S]`, Softmax, IsNaN, Where, ·V, a no-op Reshape, Transpose + Reshape
/// to `[B·S, H·D]`. With `keep_nan` the IsNaN output is also a graph output.
fn sdpa_graph(keep_nan: bool) -> Graph {
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![B, H, S, D]);
    let k = g.add_input("k", DType::F32, vec![B, HK, S, D]);
    let v = g.add_input("v", DType::F32, vec![B, HK, S, D]);
    let mask = g.add_input("mask", DType::F32, vec![B, 1, S, S]);
    let c = inline_weight(
        &mut g,
        "c",
        Tensor::f32(vec![], vec![(1.0 / (D as f32).sqrt()).sqrt()]),
    );
    let zero = inline_weight(&mut g, "zero", Tensor::f32(vec![], vec![0.0]));
    let k4 = repeat_kv(&mut g, "k", k);
    let v4 = repeat_kv(&mut g, "v", v);
    let k3 = reshape(&mut g, "k_flat", k4, vec![B * H, S, D]);
    let kt3 = transpose(&mut g, "k_t", k3, vec![0, 2, 1], vec![B * H, D, S]);
    let kt = reshape(&mut g, "k_t4", kt3, vec![B, H, D, S]);
    let qs = binary_node(&mut g, "q_scale", BinaryOp::Mul, [q, c], vec![B, H, S, D]);
    let ks = binary_node(&mut g, "k_scale", BinaryOp::Mul, [kt, c], vec![B, H, D, S]);
    let sc = vec![B, H, S, S];
    let mm = Op::MatMul(MatMulAttrs {});
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![qs, ks], sc.clone());
    let z = binary_node(
        &mut g,
        "mask_add",
        BinaryOp::Add,
        [scores, mask],
        sc.clone(),
    );
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![z], sc.clone());
    let is_nan = Op::Unary(UnaryAttrs {
        kind: UnaryOp::IsNaN,
    });
    let (_, nan) = node(&mut g, "is_nan", is_nan, vec![p], sc.clone(), DType::Bool);
    let clean = f32_node(&mut g, "clean", Op::Where, vec![nan, zero, p], sc);
    let o = f32_node(&mut g, "pv", mm, vec![clean, v4], vec![B, H, S, D]);
    let o = reshape(&mut g, "noop", o, vec![B, H, S, D]);
    let y = merge(&mut g, o, vec![B * S, H * D]);
    g.outputs.push(y);
    if keep_nan {
        g.outputs.push(nan);
    }
    g
}

#[test]
fn sdpa_decomposition_fuses_and_zeroes_a_fully_masked_row() {
    let (mut inputs, keep) = qkv_and_keep(70);
    let mask = keep
        .iter()
        .map(|&k| if k { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    inputs.insert("mask".into(), Tensor::f32(vec![B, 1, S, S], mask));
    let (fused, steps, out) = run_checked(sdpa_graph(false), &inputs);
    assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]));
    // 2 × (Reshape + Expand + Reshape), Kᵀ's Reshape + Transpose + Reshape, 2 Mul, QKᵀ,
    // mask Add, Softmax, IsNaN, Where, ·V, no-op Reshape, Transpose + Reshape: 20.
    assert_eq!(steps, 20);
    assert_hidden_row_zero(&out[0]);
}

/// The NaN mask is also a graph output: the softmax output has a reader outside the chain
/// the kernel would replace, so nothing of the attention fuses (and the run still matches).
#[test]
fn sdpa_with_the_nan_mask_read_elsewhere_does_not_fuse() {
    let (mut inputs, keep) = qkv_and_keep(80);
    let mask = keep
        .iter()
        .map(|&k| if k { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    inputs.insert("mask".into(), Tensor::f32(vec![B, 1, S, S], mask));
    let (fused, _, out) = run_checked(sdpa_graph(true), &inputs);
    assert!(!fused.contains_key("fused Attention"), "{fused:?}");
    assert_hidden_row_zero(&out[0]);
    // The hidden row's probabilities were NaN before the cleanup.
    assert!(out[1].as_bool().unwrap().contains(&true));
}

/// ONNX Attention (opset 23, 4-D): q `[B, H, S, D]`, k and v either repeated over the
/// query-head groups by Reshape + Expand + Reshape (real/llama_op23) or with their HK heads
/// as the op allows; a bool (or f32) mask hiding one query from every key; the heads merged
/// after. With `is_causal` the op keeps its own kernel.
fn attention_op_graph(repeat: bool, mask_dtype: DType, is_causal: bool) -> Graph {
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![B, H, S, D]);
    let k = g.add_input("k", DType::F32, vec![B, HK, S, D]);
    let v = g.add_input("v", DType::F32, vec![B, HK, S, D]);
    let mask = g.add_input("mask", mask_dtype, vec![B, 1, S, S]);
    let (k, v) = if repeat {
        (repeat_kv(&mut g, "k", k), repeat_kv(&mut g, "v", v))
    } else {
        (k, v)
    };
    let op = Op::Attention(AttentionAttrs {
        has_mask: true,
        scale: Some(0.3),
        is_causal,
        ..Default::default()
    });
    let y = f32_node(
        &mut g,
        "attention",
        op,
        vec![q, k, v, mask],
        vec![B, H, S, D],
    );
    let y = merge(&mut g, y, vec![B, S, H * D]);
    g.outputs.push(y);
    g
}

#[test]
fn onnx_attention_op_fuses_with_grouped_kv_and_a_fully_masked_row() {
    for (repeat, dtype) in [
        (true, DType::Bool),
        (false, DType::Bool),
        (true, DType::F32),
    ] {
        let (mut inputs, keep) = qkv_and_keep(90);
        let mask = match dtype {
            DType::Bool => Tensor::new(DType::Bool, vec![B, 1, S, S], TensorData::Bool(keep)),
            _ => Ok(Tensor::f32(
                vec![B, 1, S, S],
                keep.iter()
                    .map(|&k| if k { 0.0 } else { f32::NEG_INFINITY })
                    .collect(),
            )),
        };
        inputs.insert("mask".into(), mask.unwrap());
        let (fused, steps, out) = run_checked(attention_op_graph(repeat, dtype, false), &inputs);
        assert_eq!(
            fused,
            BTreeMap::from([("fused Attention", 1)]),
            "repeat {repeat}, {dtype:?}"
        );
        // The op, Transpose + Reshape, and 2 × (Reshape + Expand + Reshape) when repeated.
        assert_eq!(steps, if repeat { 9 } else { 3 });
        let v = out[0].as_f32().unwrap();
        let o = (S + HIDDEN_ROW) * H * D;
        assert_eq!(&v[o..o + H * D], &[0.0; H * D]);
        // The causal variant fuses too (the kernel masks the keys after each query), equal
        // to the op's own kernel, the hidden row still zeros.
        let (fused, _, out) = run_checked(attention_op_graph(repeat, dtype, true), &inputs);
        assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]), "causal");
        let v = out[0].as_f32().unwrap();
        assert_eq!(&v[o..o + H * D], &[0.0; H * D]);
    }
}

/// Only q multiplied by the scale before `Q·Kᵀ` (Kᵀ by `Transpose [0, 1, 3, 2]`), a bool
/// causal mask applied with `Where(keep, scores, fill)`, grouped-query k and v (the zoo's
/// fused-QKV LLaMA spelling): one fused kernel, equal to the unfused chain.
#[test]
fn query_only_scale_with_a_where_mask_fuses() {
    let (mut inputs, keep) = qkv_and_keep(90);
    inputs.insert("keep".into(), Tensor::bool(vec![B, 1, S, S], keep));
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![B, H, S, D]);
    let k = g.add_input("k", DType::F32, vec![B, HK, S, D]);
    let v = g.add_input("v", DType::F32, vec![B, HK, S, D]);
    let keep = g.add_input("keep", DType::Bool, vec![B, 1, S, S]);
    let c = inline_weight(
        &mut g,
        "c",
        Tensor::f32(vec![], vec![1.0 / (D as f32).sqrt()]),
    );
    let fill = inline_weight(&mut g, "fill", Tensor::f32(vec![], vec![-1e9]));
    let k4 = repeat_kv(&mut g, "k", k);
    let v4 = repeat_kv(&mut g, "v", v);
    let kt = transpose(&mut g, "k_t", k4, vec![0, 1, 3, 2], vec![B, H, D, S]);
    let qs = binary_node(&mut g, "q_scale", BinaryOp::Mul, [q, c], vec![B, H, S, D]);
    let sc = vec![B, H, S, S];
    let mm = Op::MatMul(MatMulAttrs {});
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![qs, kt], sc.clone());
    let z = f32_node(
        &mut g,
        "mask",
        Op::Where,
        vec![keep, scores, fill],
        sc.clone(),
    );
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![z], sc);
    let o = f32_node(&mut g, "pv", mm, vec![p, v4], vec![B, H, S, D]);
    let y = merge(&mut g, o, vec![B, S, H * D]);
    g.outputs.push(y);
    let (fused, steps, _) = run_checked(g, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]));
    // 2 × (Reshape + Expand + Reshape), Transpose, Mul, QKᵀ, Where, Softmax, ·V,
    // Transpose + Reshape: 14.
    assert_eq!(steps, 14);
}

/// Elementwise steps between the scores and the Softmax beyond one mask: Gemma-2's
/// soft-capping (`· c`, then `⊘ cap`, Tanh, `· cap`), T5's position bias `[1, H, S, S]` and
/// then its padding mask, and a `Where(hide, fill, z)` with the scores in the else-branch
/// (DeBERTa's spelling): one fused kernel, equal to the unfused chain.
#[test]
fn softcapping_bias_and_else_branch_masks_fuse() {
    let (mut inputs, keep) = qkv_and_keep(95);
    let hide: Vec<bool> = keep.iter().map(|k| !k).collect();
    inputs.insert("hide".into(), Tensor::bool(vec![B, 1, S, S], hide));
    let mut g = Graph::new();
    let q = g.add_input("q", DType::F32, vec![B, H, S, D]);
    let k = g.add_input("k", DType::F32, vec![B, HK, S, D]);
    let v = g.add_input("v", DType::F32, vec![B, HK, S, D]);
    let hide = g.add_input("hide", DType::Bool, vec![B, 1, S, S]);
    let scalar =
        |g: &mut Graph, name: &str, x: f32| inline_weight(g, name, Tensor::f32(vec![], vec![x]));
    let c = scalar(&mut g, "c", 1.0 / (D as f32).sqrt());
    let cap = scalar(&mut g, "cap", 0.8);
    let fill = scalar(&mut g, "fill", -1e9);
    let bias_values = (0..H * S * S).map(|i| (i % 7) as f32 * 0.1).collect();
    let bias = inline_weight(&mut g, "bias", Tensor::f32(vec![1, H, S, S], bias_values));
    let pad_values = (0..B * S)
        .map(|i| if i % 4 == 3 { -1e4 } else { 0.0 })
        .collect();
    let pad = inline_weight(&mut g, "pad", Tensor::f32(vec![B, 1, 1, S], pad_values));
    let k4 = repeat_kv(&mut g, "k", k);
    let v4 = repeat_kv(&mut g, "v", v);
    let kt = transpose(&mut g, "k_t", k4, vec![0, 1, 3, 2], vec![B, H, D, S]);
    let sc = vec![B, H, S, S];
    let mm = Op::MatMul(MatMulAttrs {});
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![q, kt], sc.clone());
    let mut z = binary_node(&mut g, "scale", BinaryOp::Mul, [scores, c], sc.clone());
    z = binary_node(&mut g, "cap_div", BinaryOp::Div, [z, cap], sc.clone());
    let tanh = Op::Unary(UnaryAttrs {
        kind: UnaryOp::Tanh,
    });
    z = f32_node(&mut g, "tanh", tanh, vec![z], sc.clone());
    z = binary_node(&mut g, "cap_mul", BinaryOp::Mul, [cap, z], sc.clone());
    z = binary_node(&mut g, "bias", BinaryOp::Add, [z, bias], sc.clone());
    z = binary_node(&mut g, "pad", BinaryOp::Add, [pad, z], sc.clone());
    z = f32_node(&mut g, "hide", Op::Where, vec![hide, fill, z], sc.clone());
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![z], sc);
    let o = f32_node(&mut g, "pv", mm, vec![p, v4], vec![B, H, S, D]);
    let y = merge(&mut g, o, vec![B, S, H * D]);
    g.outputs.push(y);
    let (fused, steps, _) = run_checked(g, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]));
    // 2 × (Reshape + Expand + Reshape), Transpose, QKᵀ, 7 score steps, Softmax, ·V,
    // Transpose + Reshape: 19.
    assert_eq!(steps, 19);
}

/// Scores computed as `[B·H, Sq, Sk]` (BLOOM's `baddbmm`, DeBERTa): q, k and v split into
/// heads and flattened to `[B·H, S, D]`, only Kᵀ scaled, an ALiBi-like bias `[B·H, 1, S]`
/// added before the Reshape to `[B, H, S, S]`, then `Where(hide, fill, z)`, the Softmax
/// flattened again for `·V` and the output reshaped back and merged: one fused kernel,
/// equal to the unfused chain.
#[test]
fn flattened_head_scores_with_a_per_head_bias_fuse() {
    let (mut inputs, keep) = qkv_and_keep(97);
    let hide: Vec<bool> = keep.iter().map(|k| !k).collect();
    inputs.insert("hide".into(), Tensor::bool(vec![B, 1, S, S], hide));
    for (name, seed) in [("q", 1), ("k", 2), ("v", 3)] {
        inputs.insert(name.into(), rand_f32(&[B, S, H * D], seed));
    }
    let mut g = Graph::new();
    let hide = g.add_input("hide", DType::Bool, vec![B, 1, S, S]);
    let flat = |g: &mut Graph, name: &str| {
        let x = g.add_input(name, DType::F32, vec![B, S, H * D]);
        let r = reshape(g, &format!("{name}_r"), x, vec![B, S, H, D]);
        let t = transpose(
            g,
            &format!("{name}_t"),
            r,
            vec![0, 2, 1, 3],
            vec![B, H, S, D],
        );
        reshape(g, &format!("{name}_flat"), t, vec![B * H, S, D])
    };
    let (q3, k3, v3) = (flat(&mut g, "q"), flat(&mut g, "k"), flat(&mut g, "v"));
    let c = inline_weight(&mut g, "c", Tensor::f32(vec![], vec![0.4]));
    let fill = inline_weight(&mut g, "fill", Tensor::f32(vec![], vec![-1e9]));
    let alibi_values = (0..B * H * S).map(|i| (i % 11) as f32 * -0.05).collect();
    let alibi = inline_weight(
        &mut g,
        "alibi",
        Tensor::f32(vec![B * H, 1, S], alibi_values),
    );
    let kt = transpose(&mut g, "k_tt", k3, vec![0, 2, 1], vec![B * H, D, S]);
    let kts = binary_node(&mut g, "k_scale", BinaryOp::Mul, [kt, c], vec![B * H, D, S]);
    let mm = Op::MatMul(MatMulAttrs {});
    let s3 = vec![B * H, S, S];
    let scores = f32_node(&mut g, "qk", mm.clone(), vec![q3, kts], s3.clone());
    let z3 = binary_node(
        &mut g,
        "alibi_add",
        BinaryOp::Add,
        [scores, alibi],
        s3.clone(),
    );
    let z4 = reshape(&mut g, "z4", z3, vec![B, H, S, S]);
    let z = f32_node(
        &mut g,
        "hide",
        Op::Where,
        vec![hide, fill, z4],
        vec![B, H, S, S],
    );
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    let p = f32_node(&mut g, "softmax", sm, vec![z], vec![B, H, S, S]);
    let p3 = reshape(&mut g, "p3", p, s3);
    let o3 = f32_node(&mut g, "pv", mm, vec![p3, v3], vec![B * H, S, D]);
    let o4 = reshape(&mut g, "o4", o3, vec![B, H, S, D]);
    let y = merge(&mut g, o4, vec![B, S, H * D]);
    g.outputs.push(y);
    let (fused, steps, _) = run_checked(g, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused Attention", 1)]));
    // 3 × (Reshape + Transpose + Reshape), Kᵀ's Transpose and Mul, QKᵀ, the bias Add,
    // Reshape, Where, Softmax, Reshape, ·V, Reshape, Transpose + Reshape: 21.
    assert_eq!(steps, 21);
}
