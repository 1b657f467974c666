//! Reductions and scans: ReduceSum/Mean/Max/Min/Prod/SumSquare/L2
//! (<https://onnx.ai/onnx/operators/onnx__ReduceSum.html> and siblings), ArgMax / ArgMin
//! (<https://onnx.ai/onnx/operators/onnx__ArgMax.html>), TopK
//! (<https://onnx.ai/onnx/operators/onnx__TopK.html>) and CumSum
//! (<https://onnx.ai/onnx/operators/onnx__CumSum.html>).
//!
//! Cost: one FLOP per input element (CumSum: per output element; TopK: a comparison per
//! input element to select, plus `k·log2 k` per lane to order the selection). Partitioning: split on an
//! axis that is not reduced/scanned (`norm-keep-split`); ReduceSum/Mean also pass partial
//! sums through (`linear-partial`). ArgMax / ArgMin along a split axis would need the
//! values with the indices to combine, so they take that axis whole (replicated input); TopK
//! likewise keeps a split on every axis but its own.
use super::{first_numel, Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::op::{ArgReduceAttrs, CumSumAttrs, ReduceAttrs, ReduceKind, TopKAttrs};
use crate::{DType, IrError};

impl OpSpec for ReduceAttrs {
    fn name(&self) -> String {
        format!("Reduce{:?}", self.kind)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        reduce(cx, &self.axes, self.keepdims).map(|o| vec![o])
    }
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        first_numel(inputs)
    }
    fn partitioning(&self) -> Partitioning {
        match self.kind {
            ReduceKind::Sum | ReduceKind::Mean => {
                Partitioning::Rules(&["linear-partial", "norm-keep-split"])
            }
            _ => Partitioning::Rules(&["norm-keep-split"]),
        }
    }
}

impl OpSpec for ArgReduceAttrs {
    fn name(&self) -> String {
        if self.max { "ArgMax" } else { "ArgMin" }.into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        if cx.inputs[0].0 == DType::Bool {
            return Err(cx.err("input 0 must be numeric, got bool"));
        }
        let (_, shape) = reduce(cx, &[self.axis], self.keepdims)?;
        Ok(vec![(DType::I64, shape)])
    }
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        first_numel(inputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["norm-keep-split"])
    }
}

impl OpSpec for TopKAttrs {
    fn name(&self) -> String {
        "TopK".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let (d, mut shape) = cx.input(0);
        if d == DType::Bool {
            return Err(cx.err("input 0 must be numeric, got bool"));
        }
        cx.axis_in_range(self.axis, shape.len())?;
        if self.k > shape[self.axis] {
            return Err(cx.err(format!(
                "k = {} exceeds extent {} of axis {} of the input {shape:?}",
                self.k, shape[self.axis], self.axis
            )));
        }
        shape[self.axis] = self.k;
        Ok(vec![(d, shape.clone()), (DType::I64, shape)])
    }
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let k = self.k as u64;
        let lanes = first_numel(outputs) / k.max(1);
        let order = k * (64 - k.leading_zeros() as u64);
        first_numel(inputs) + lanes * order
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["norm-keep-split"])
    }
}

impl OpSpec for CumSumAttrs {
    fn name(&self) -> String {
        "CumSum".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        cx.axis_in_range(self.axis, cx.inputs[0].1.len())?;
        Ok(vec![cx.input(0)])
    }
    fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        first_numel(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["norm-keep-split"])
    }
}

fn reduce(cx: &InferCx, axes: &[usize], keepdims: bool) -> Result<TypedShape, IrError> {
    let (d, x) = cx.input(0);
    let mut seen = vec![false; x.len()];
    for &a in axes {
        cx.axis_in_range(a, x.len())?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(cx.err(format!("axis {a} repeated in {axes:?}")));
        }
    }
    let out = x
        .iter()
        .enumerate()
        .filter_map(|(i, &e)| match (seen[i], keepdims) {
            (false, _) => Some(e),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok((d, out))
}
