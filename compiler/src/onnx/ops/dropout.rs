//! Dropout, inference only: <https://onnx.ai/onnx/operators/onnx__Dropout.html> (13..=23).
//!
//! In inference mode (no `training_mode` input, or a constant false one) Dropout is the
//! identity and its optional `mask` output is all true. Training mode is random and is
//! rejected, except with a constant ratio of 0, which keeps every element (identity again).
use super::elementwise::unary;
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::op::{ExpandAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::{Op, Tensor};

pub(super) const OPS: &[OpEntry] = &[entry("Dropout", 1, dropout)];

/// Why a node is rejected in training mode.
const TRAINING: &str = "Dropout in training mode is not supported (inference only)";

/// The value of a constant scalar input, or `None` when the input is omitted.
fn scalar(cx: &NodeCx, i: usize, what: &str) -> Result<Option<f64>, ImportError> {
    if cx.opt_input(i).is_none() {
        return Ok(None);
    }
    let v = cx.input(i)?;
    let t = v.konst.ok_or_else(|| {
        cx.err(format!(
            "input {i} ('{}') must be a constant ({TRAINING}; {what} decides the mode)",
            v.name
        ))
    })?;
    match t.to_f64_vec().as_slice() {
        [x] => Ok(Some(*x)),
        _ => Err(cx.err(format!(
            "input {i} ('{}', {what}) must be a scalar, got shape {:?}",
            v.name, t.shape
        ))),
    }
}

fn dropout(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let training = scalar(cx, 2, "training_mode")?.is_some_and(|t| t != 0.0);
    if training {
        // Default ratio 0.5; only a ratio of exactly 0 keeps every element.
        let ratio = scalar(cx, 1, "ratio")?.unwrap_or(0.5);
        if ratio != 0.0 {
            return Err(ImportError::UnsupportedFeature {
                node: cx.name.into(),
                op: cx.node.op_type.clone(),
                msg: format!("{TRAINING}: training_mode is true and ratio is {ratio}"),
            });
        }
    }
    if !cx.output_used(1) {
        return unary(UnaryOp::Identity);
    }
    // The mask keeps every element: a constant true broadcast to X's shape.
    let shape = cx.input(0)?.shape.to_vec();
    Ok(Lowered::Picked {
        steps: vec![
            Step {
                op: Op::Unary(UnaryAttrs {
                    kind: UnaryOp::Identity,
                }),
                inputs: vec![Ref::In(0)],
            },
            Step {
                op: Op::Expand(ExpandAttrs { shape }),
                inputs: vec![Ref::Const(Tensor::bool(vec![], vec![true]))],
            },
        ],
        outputs: vec![(0, 0), (1, 0)],
    })
}
