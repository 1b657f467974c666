//! Normalisations: Softmax / LogSoftmax (<https://onnx.ai/onnx/operators/onnx__Softmax.html>),
//! LayerNormalization (<https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>) and
//! RMSNormalization (<https://onnx.ai/onnx/operators/onnx__RMSNormalization.html>).
//!
//! Cost per element: Softmax 5, LayerNorm 8, RMSNorm 5 FLOPs. Partitioning: split on an
//! axis the op does not normalise (`norm-keep-split`).
use super::{first_numel, Arity, OpSpec, Partitioning};
use crate::infer::{broadcasts_to, InferCx, TypedShape};
use crate::op::{NormAttrs, SoftmaxAttrs};
use crate::{DType, IrError};

const KEEP_SPLIT: Partitioning = Partitioning::Rules(&["norm-keep-split"]);

impl OpSpec for SoftmaxAttrs {
    fn name(&self) -> String {
        if self.log { "LogSoftmax" } else { "Softmax" }.into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        cx.float_input(0)?;
        cx.axis_in_range(self.axis, cx.inputs[0].1.len())?;
        Ok(vec![cx.input(0)])
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        5 * first_numel(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        KEEP_SPLIT
    }
}

/// The spec of [`crate::Op::LayerNorm`]: inputs X, Scale, optional Bias; outputs Y and the
/// optional Mean and InvStdDev.
pub struct LayerNormSpec<'a>(pub &'a NormAttrs);

impl OpSpec for LayerNormSpec<'_> {
    fn name(&self) -> String {
        "LayerNorm".into()
    }
    fn arity(&self) -> Arity {
        Arity::range(2, 3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let y = norm(cx, self.0.axis)?;
        // Mean and InvStdDev: X's shape with the normalised axes set to 1, in the
        // stash type (f32).
        let mut stat = y.1.clone();
        stat[self.0.axis..].fill(1);
        Ok(vec![y, (DType::F32, stat.clone()), (DType::F32, stat)])
    }
    /// Only Y is required; Mean and InvStdDev are optional.
    fn required_outputs(&self, _produced: usize) -> usize {
        1
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        8 * first_numel(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        KEEP_SPLIT
    }
}

/// The spec of [`crate::Op::RmsNorm`]: inputs X, Scale.
pub struct RmsNormSpec<'a>(pub &'a NormAttrs);

impl OpSpec for RmsNormSpec<'_> {
    fn name(&self) -> String {
        "RmsNorm".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        norm(cx, self.0.axis).map(|o| vec![o])
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        5 * first_numel(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        KEEP_SPLIT
    }
}

fn norm(cx: &InferCx, axis: usize) -> Result<TypedShape, IrError> {
    cx.float_input(0)?;
    let x = cx.inputs[0].1;
    cx.axis_in_range(axis, x.len())?;
    let normalized = &x[axis..];
    for i in 1..cx.inputs.len() {
        let p = cx.inputs[i].1;
        if !broadcasts_to(p, normalized) {
            return Err(cx.err(format!(
                "input {i} shape {p:?} does not broadcast to the normalised shape {normalized:?} of {x:?}"
            )));
        }
    }
    Ok(cx.input(0))
}
