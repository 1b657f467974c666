//! Normalisations and softmax.
//!
//! * LayerNormalization: <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
//!   (17..=23; only output Y — the optional Mean/InvStdDev outputs are unsupported when used)
//! * RMSNormalization: <https://onnx.ai/onnx/operators/onnx__RMSNormalization.html> (23)
//! * Softmax / LogSoftmax: <https://onnx.ai/onnx/operators/onnx__Softmax.html> (13..=23)
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{NormAttrs, SoftmaxAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("LayerNormalization", 17, layer_norm),
    entry("RMSNormalization", 23, rms_norm),
    entry("Softmax", 13, |cx| softmax(cx, false)),
    entry("LogSoftmax", 13, |cx| softmax(cx, true)),
];

fn norm_attrs(cx: &NodeCx) -> Result<NormAttrs, ImportError> {
    let axis = cx.axis(cx.attr_int("axis", -1), cx.rank(0)?)?;
    Ok(NormAttrs {
        axis,
        epsilon: cx.attr_float("epsilon", 1e-5),
    })
}

fn layer_norm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let op = Op::LayerNorm(norm_attrs(cx)?);
    if cx.opt_input(2).is_some() {
        Ok(Lowered::op(op, &[0, 1, 2]))
    } else {
        Ok(Lowered::op(op, &[0, 1]))
    }
}

fn rms_norm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(Op::RmsNorm(norm_attrs(cx)?), &[0, 1]))
}

fn softmax(cx: &NodeCx, log: bool) -> Result<Lowered, ImportError> {
    let axis = cx.axis(cx.attr_int("axis", -1), cx.rank(0)?)?;
    Ok(Lowered::op(Op::Softmax(SoftmaxAttrs { axis, log }), &[0]))
}
