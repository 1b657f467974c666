//! Attention: <https://onnx.ai/onnx/operators/onnx__Attention.html> (23..=28: 24 adds the
//! `nonpad_kv_seqlen` input, 25 the sliding-window attributes; later versions only add
//! element types). `softmax_precision` is accepted and the softmax runs in f32.
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::AttentionAttrs;
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[entry("Attention", 23, attention)];

fn heads(cx: &NodeCx, name: &str) -> Result<Option<usize>, ImportError> {
    match cx.attr(name) {
        None => Ok(None),
        Some(a) if a.i > 0 => Ok(Some(a.i as usize)),
        Some(a) => Err(cx.err(format!("attribute {name} must be positive, got {}", a.i))),
    }
}

fn attention(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let mode = cx.attr_int("qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        return Err(cx.err(format!("qk_matmul_output_mode must be 0..=3, got {mode}")));
    }
    let window = |name: &str| -> Result<i64, ImportError> {
        match cx.attr_int(name, -1) {
            w if w >= -1 => Ok(w),
            w => Err(cx.err(format!("{name} must be -1 or non-negative, got {w}"))),
        }
    };
    let (has_mask, has_pk, has_pv, has_nonpad) = (
        cx.opt_input(3).is_some(),
        cx.opt_input(4).is_some(),
        cx.opt_input(5).is_some(),
        cx.opt_input(6).is_some(),
    );
    if has_pk != has_pv {
        return Err(cx.err("past_key and past_value must be given together"));
    }
    if has_nonpad && has_pk {
        return Err(cx.err("nonpad_kv_seqlen cannot be combined with past_key / past_value"));
    }
    let attrs = AttentionAttrs {
        is_causal: cx.attr_int("is_causal", 0) != 0,
        q_num_heads: heads(cx, "q_num_heads")?,
        kv_num_heads: heads(cx, "kv_num_heads")?,
        qk_matmul_output_mode: mode as u8,
        scale: cx.attr("scale").map(|a| a.f),
        softcap: cx.attr_float("softcap", 0.0),
        left_window: window("left_window_size")?,
        right_window: window("right_window_size")?,
        has_mask,
        has_past: has_pk,
        has_nonpad,
    };
    let mut inputs = vec![0, 1, 2];
    inputs.extend(
        [(has_mask, 3), (has_pk, 4), (has_pv, 5), (has_nonpad, 6)]
            .iter()
            .filter(|p| p.0)
            .map(|p| p.1),
    );
    Ok(Lowered::op(Op::Attention(attrs), &inputs))
}
