//! Attention: <https://onnx.ai/onnx/operators/onnx__Attention.html> (23..=28: 24 adds the
//! `nonpad_kv_seqlen` input, 25 the sliding-window attributes; later versions only add
//! element types). `softmax_precision` is accepted and the softmax runs in f32.
//!
//! Lowering: one IR `Attention` step for Y and, when used, another for `qk_matmul_output`;
//! `present_key` / `present_value` are what they are by definition, the past concatenated
//! with the new keys / values in `[B, heads, S, D]` (a Reshape + Transpose first for 3-D
//! inputs), so they partition and run like any Concat.
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::op::{
    AttentionAttrs, AxisAttrs, ReshapeAttrs, TransposeAttrs, UnaryAttrs, UnaryOp,
};
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
        qk_output: false,
    };
    let present_used = cx.output_used(1) || cx.output_used(2);
    let mut inputs = vec![0, 1, 2];
    for (given, i) in [(has_mask, 3), (has_pk, 4), (has_pv, 5), (has_nonpad, 6)] {
        if given {
            inputs.push(i);
        }
    }
    let refs = || inputs.iter().map(|&i| Ref::In(i)).collect::<Vec<_>>();
    let mut steps = vec![Step {
        op: Op::Attention(attrs.clone()),
        inputs: refs(),
    }];
    // Node output k → (step, output); outputs nobody reads point at Y.
    let mut outputs = vec![(0, 0)];
    for (k, past) in [(1, 4), (2, 5)] {
        outputs.push(match present_used {
            true => (
                present(
                    cx,
                    &mut steps,
                    k,
                    has_pk.then_some(past),
                    attrs.kv_num_heads,
                )?,
                0,
            ),
            false => (0, 0),
        });
    }
    if cx.output_used(3) {
        steps.push(Step {
            op: Op::Attention(AttentionAttrs {
                qk_output: true,
                ..attrs
            }),
            inputs: refs(),
        });
        outputs.push((steps.len() - 1, 0));
    }
    Ok(Lowered::Picked { steps, outputs })
}

/// Appends the steps of `present_key` (node input `k` = 1) or `present_value` (2): the input
/// in `[B, heads, S, D]`, after the past (node input `past`) when given. Returns its step.
fn present(
    cx: &NodeCx,
    steps: &mut Vec<Step>,
    k: usize,
    past: Option<usize>,
    heads: Option<usize>,
) -> Result<usize, ImportError> {
    let x = cx.input(k)?;
    let cur = match (x.shape, heads) {
        ([b, s, hid], Some(h)) if hid % h == 0 => {
            steps.push(Step {
                op: Op::Reshape(ReshapeAttrs {
                    shape: vec![*b, *s, h, hid / h],
                }),
                inputs: vec![Ref::In(k)],
            });
            steps.push(Step {
                op: Op::Transpose(TransposeAttrs {
                    perm: vec![0, 2, 1, 3],
                }),
                inputs: vec![Ref::Prev(steps.len() - 1, 0)],
            });
            Ref::Prev(steps.len() - 1, 0)
        }
        ([_, _, _, _], _) => Ref::In(k),
        _ => {
            return Err(cx.err(format!(
                "input {k} has shape {:?}: not 3-D with head counts, nor 4-D",
                x.shape
            )))
        }
    };
    steps.push(match past {
        Some(p) => Step {
            op: Op::Concat(AxisAttrs { axis: 2 }),
            inputs: vec![Ref::In(p), cur],
        },
        None => Step {
            op: Op::Unary(UnaryAttrs {
                kind: UnaryOp::Identity,
            }),
            inputs: vec![cur],
        },
    });
    Ok(steps.len() - 1)
}
