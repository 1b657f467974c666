//! Tests of the fused attention kernel against the ONNX `Attention` op's kernel: masks,
//! grouped-query heads, rows with no key left, several blocks of rows and `is_causal`.
use super::super::testing::*;
use super::super::{eval_fused, FusedOp};
use super::*;
use tessera_ir::op::*;
use tessera_ir::Op;
use tessera_ir::{DType, TensorData};

/// ONNX Attention (opset 23) with 4-D grouped-query inputs and a boolean or float mask, one
/// row masked at every key: the fused kernel (q and k each times √scale, the mask as a
/// −∞ bias, masked rows zero) equals the Attention kernel bit for bit up to GEMM blocking.
#[test]
fn onnx_attention_op_equals_the_fused_kernel() {
    // 7 queries: one block of rows; 70: three blocks of 32, each reading the keys up to its
    // last row's diagonal (query 2 sees no key, so the first block reads them all).
    for s in [7, 70] {
        onnx_attention_case(s);
    }
}

/// The fused attention of an ONNX `Attention` op over 4-D head-major inputs `[b, heads,
/// s, d]` (`hk` key-value heads): q and k each times `scale`, masked rows zero.
fn onnx_op_shape(
    [b, h, hk, s, d]: [usize; 5],
    scale: f32,
    mask: AttentionMask,
    causal: bool,
) -> FusedOp {
    FusedOp::Attention(AttentionShape {
        batch: b,
        q_len: s,
        kv_len: s,
        heads: h,
        kv_heads: hk,
        layouts: [HeadLayout::HeadMajor; 3],
        head_dim: d,
        scale: AttentionScale::Fixed(scale),
        mask,
        terms: vec![],
        rows: SoftmaxRows::Guarded,
        causal,
        merged: false,
        out_shape: vec![b, h, s, d],
    })
}

fn onnx_attention_case(s: usize) {
    let (b, h, hk, d) = (2, 4, 2, 6);
    let q = rand(vec![b, h, s, d], 61);
    let k = rand(vec![b, hk, s, d], 62);
    let v = rand(vec![b, hk, s, d], 63);
    let keep: Vec<bool> = (0..s * s).map(|e| e % s <= e / s && e / s != 2).collect();
    let cond = Tensor::new(
        DType::Bool,
        vec![1, 1, s, s],
        TensorData::Bool(keep.clone()),
    )
    .unwrap();
    let additive = |masked: f32| {
        Tensor::f32(
            vec![1, 1, s, s],
            keep.iter().map(|&k| if k { 0.0 } else { masked }).collect(),
        )
    };
    let (bias, bias_min) = (additive(f32::NEG_INFINITY), additive(f32::MIN));
    for (attrs_scale, mask, mask_kind) in [
        (None, &cond, AttentionMask::Bias),
        (Some(0.3), &bias, AttentionMask::Add),
        (Some(0.3), &bias_min, AttentionMask::Add),
    ] {
        let attrs = AttentionAttrs {
            scale: attrs_scale,
            has_mask: true,
            ..Default::default()
        };
        let want = run(Op::Attention(attrs.clone()), &[&q, &k, &v, mask]);
        let scale = crate::attention_qk_factor(&attrs, d);
        let op = onnx_op_shape([b, h, hk, s, d], scale, mask_kind, false);
        let got = eval_fused(&op, &[&q, &k, &v, mask]).unwrap();
        let gv = got.as_f32().unwrap();
        assert!(gv.iter().all(|x| x.is_finite()));
        let worst = max_abs_diff(&got, &want);
        assert!(
            worst < 1e-6,
            "{mask_kind:?}, {s} queries: max abs difference {worst}"
        );
        if mask.as_f32().is_some_and(|m| m.contains(&f32::MIN)) {
            // finfo.min is not -inf: query 2's softmax is uniform over every key.
            continue;
        }
        // Query 2 sees no key: zeros in every head.
        for hh in 0..b * h {
            let o = (hh * s + 2) * d;
            assert_eq!(&gv[o..o + d], &[0.0; 6]);
        }
    }
    // `is_causal` on top of a mask that is not causal (every fifth key hidden, query 2
    // sees none), and with no mask at all.
    let pad: Vec<bool> = (0..s * s).map(|e| e % s % 5 != 4 && e / s != 2).collect();
    let pad = Tensor::new(DType::Bool, vec![1, 1, s, s], TensorData::Bool(pad)).unwrap();
    for mask in [Some(&pad), None] {
        let attrs = AttentionAttrs {
            is_causal: true,
            has_mask: mask.is_some(),
            ..Default::default()
        };
        let mut ins = vec![&q, &k, &v];
        ins.extend(mask);
        let want = run(Op::Attention(attrs.clone()), &ins);
        let mask_kind = match mask {
            Some(_) => AttentionMask::Bias,
            None => AttentionMask::None,
        };
        let scale = crate::attention_qk_factor(&attrs, d);
        let op = onnx_op_shape([b, h, hk, s, d], scale, mask_kind, true);
        let got = eval_fused(&op, &ins).unwrap();
        let worst = max_abs_diff(&got, &want);
        assert!(
            worst < 1e-6,
            "causal, {s} queries, mask {}: {worst}",
            mask.is_some()
        );
        // Without the causal rows the outputs differ (the flag is not a no-op).
        if s > 1 {
            let unmasked = run(
                Op::Attention(AttentionAttrs {
                    is_causal: false,
                    ..attrs.clone()
                }),
                &ins,
            );
            assert!(max_abs_diff(&unmasked, &want) > 1e-3);
        }
    }
}
