//! Scatters: ScatterElements (<https://onnx.ai/onnx/operators/onnx__ScatterElements.html>)
//! and ScatterND (<https://onnx.ai/onnx/operators/onnx__ScatterND.html>), with the
//! `reduction` of opsets 16 and 18 (none, add, mul, max, min).
//!
//! Cost: one FLOP per update when a reduction combines it with the data (none: a copy);
//! bytes are the data read and written, the indices and the updates. Partitioning: replicated
//! only: where an update lands depends on the index values, so a rank holding a slice of the
//! data would need every update (and ScatterElements' indices may be narrower than the data
//! off the axis, so their slices would not line up with the data's).
use super::{tensor_bytes, Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::op::{ScatterElementsAttrs, ScatterNdAttrs, ScatterReduction};
use crate::{numel, DType, IrError};

impl OpSpec for ScatterElementsAttrs {
    fn name(&self) -> String {
        "ScatterElements".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let ((d, data), idx, upd) = operands(cx, self.reduction)?;
        cx.axis_in_range(self.axis, data.len())?;
        let fits = |(a, (&i, &n)): (usize, (&usize, &usize))| a == self.axis || i <= n;
        if idx.len() != data.len() || !idx.iter().zip(&data).enumerate().all(fits) {
            return Err(cx.err(format!(
                "indices {idx:?} do not fit data {data:?} on axes other than {}",
                self.axis
            )));
        }
        if upd != idx {
            return Err(cx.err(format!(
                "updates {upd:?} must have the shape of the indices {idx:?}"
            )));
        }
        Ok(vec![(d, data)])
    }
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        reduced_updates(self.reduction, inputs)
    }
    fn bytes(&self, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        tensor_bytes(inputs) + tensor_bytes(outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ReplicatedOnly
    }
}

impl OpSpec for ScatterNdAttrs {
    fn name(&self) -> String {
        "ScatterND".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let ((d, data), idx, upd) = operands(cx, self.reduction)?;
        let Some((&k, batch)) = idx.split_last() else {
            return Err(cx.err("indices must have rank >= 1"));
        };
        if k < 1 || k > data.len() {
            return Err(cx.err(format!(
                "indices {idx:?}: the last extent {k} must be in 1..={} (the data's rank)",
                data.len()
            )));
        }
        let mut want = batch.to_vec();
        want.extend_from_slice(&data[k..]);
        if upd != want {
            return Err(cx.err(format!(
                "updates {upd:?} must have shape {want:?} (indices {idx:?}, data {data:?})"
            )));
        }
        Ok(vec![(d, data)])
    }
    fn flops(&self, inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        reduced_updates(self.reduction, inputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ReplicatedOnly
    }
}

/// Data (dtype, shape), the indices' shape and the updates' shape, after checking the
/// indices are integers, the updates have the data's dtype and a reduction has numbers.
fn operands(
    cx: &InferCx,
    reduction: ScatterReduction,
) -> Result<(TypedShape, Vec<usize>, Vec<usize>), IrError> {
    let (di, idx) = cx.input(1);
    if !di.is_int() {
        return Err(cx.err(format!("indices must be integers, got {di}")));
    }
    let d = cx.same_dtype(&[0, 2])?;
    if d == DType::Bool && reduction != ScatterReduction::None {
        return Err(cx.err(format!(
            "reduction {reduction:?} needs numbers, got bool data"
        )));
    }
    Ok((cx.input(0), idx, cx.input(2).1))
}

/// One FLOP per update element when a reduction combines it, none for a plain store.
fn reduced_updates(reduction: ScatterReduction, inputs: &[&[usize]]) -> u64 {
    match (reduction, inputs.get(2)) {
        (ScatterReduction::None, _) | (_, None) => 0,
        (_, Some(u)) => numel(u) as u64,
    }
}
