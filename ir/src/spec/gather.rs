//! Gathers: Gather (<https://onnx.ai/onnx/operators/onnx__Gather.html>), GatherND
//! (<https://onnx.ai/onnx/operators/onnx__GatherND.html>) and GatherElements
//! (<https://onnx.ai/onnx/operators/onnx__GatherElements.html>).
//!
//! Cost: no FLOPs; bytes are the indices plus the gathered elements read and written (the
//! table is not read whole). Partitioning: Gather splits a vocabulary table by rows
//! (`gather-vocab`), the data or the indices on another axis (`gather-split`), or gathers
//! from partial sums (`scale-partial`); GatherND splits a batch dim or the indices' leading
//! axes (`gather-nd-split`), GatherElements an axis other than its own
//! (`gather-elements-split`).
use super::{tensor_bytes, Arity, OpSpec, Partitioning};
use crate::infer::{InferCx, TypedShape};
use crate::op::{AxisAttrs, GatherNdAttrs};
use crate::{DType, IrError};

/// The spec of [`crate::Op::Gather`]: inputs Data, Indices.
pub struct GatherSpec<'a>(pub &'a AxisAttrs);

impl OpSpec for GatherSpec<'_> {
    fn name(&self) -> String {
        "Gather".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let axis = self.0.axis;
        let ((d, data), idx) = data_and_indices(cx)?;
        cx.axis_in_range(axis, data.len())?;
        let mut out = data[..axis].to_vec();
        out.extend_from_slice(&idx);
        out.extend_from_slice(&data[axis + 1..]);
        Ok(vec![(d, out)])
    }
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    fn bytes(&self, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        gathered_bytes(inputs, outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["scale-partial", "gather-vocab", "gather-split"])
    }
}

impl OpSpec for GatherNdAttrs {
    fn name(&self) -> String {
        "GatherND".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let ((d, data), idx) = data_and_indices(cx)?;
        let (r, q, b) = (data.len(), idx.len(), self.batch_dims);
        if q == 0 || r == 0 || b >= q.min(r) {
            return Err(cx.err(format!(
                "batch_dims {b} too large for data {data:?} and indices {idx:?}"
            )));
        }
        if data[..b] != idx[..b] {
            return Err(cx.err(format!(
                "batch dims of data {data:?} and indices {idx:?} differ"
            )));
        }
        let k = idx[q - 1];
        if k < 1 || b + k > r {
            return Err(cx.err(format!(
                "indices last dim {k} invalid for data {data:?} with batch_dims {b}"
            )));
        }
        let mut out = idx[..q - 1].to_vec();
        out.extend_from_slice(&data[b + k..]);
        Ok(vec![(d, out)])
    }
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    fn bytes(&self, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        gathered_bytes(inputs, outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["gather-nd-split"])
    }
}

/// The spec of [`crate::Op::GatherElements`]: inputs Data, Indices of the same rank; the
/// output has the indices' shape (every extent but the axis' at most the data's, as
/// onnxruntime and PyTorch require).
pub struct GatherElementsSpec<'a>(pub &'a AxisAttrs);

impl OpSpec for GatherElementsSpec<'_> {
    fn name(&self) -> String {
        "GatherElements".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let axis = self.0.axis;
        let ((d, data), idx) = data_and_indices(cx)?;
        cx.axis_in_range(axis, data.len())?;
        let fits = |(a, (&i, &n)): (usize, (&usize, &usize))| a == axis || i <= n;
        if idx.len() != data.len() || !idx.iter().zip(&data).enumerate().all(fits) {
            return Err(cx.err(format!(
                "indices {idx:?} do not fit data {data:?} on axes other than {axis}"
            )));
        }
        Ok(vec![(d, idx)])
    }
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    fn bytes(&self, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        gathered_bytes(inputs, outputs)
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["gather-elements-split"])
    }
}

/// Data (dtype, shape) and the indices' shape, after checking the indices are integers.
fn data_and_indices(cx: &InferCx) -> Result<(TypedShape, Vec<usize>), IrError> {
    let (di, idx) = cx.input(1);
    if !di.is_int() {
        return Err(cx.err(format!("indices must be integers, got {di}")));
    }
    Ok((cx.input(0), idx))
}

/// The indices read, plus the gathered elements read once and written once.
fn gathered_bytes(inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
    tensor_bytes(inputs.get(1..).unwrap_or_default()) + 2 * tensor_bytes(outputs)
}
