//! Gathers.
//!
//! * Gather: <https://onnx.ai/onnx/operators/onnx__Gather.html> (13..=23)
//! * GatherND: <https://onnx.ai/onnx/operators/onnx__GatherND.html> (13..=23)
//! * GatherElements: <https://onnx.ai/onnx/operators/onnx__GatherElements.html> (11..=28;
//!   13 only adds element types). Constant inputs fold at import (BERT and RoBERTa exports
//!   gather their token-type buffer with indices computed from shapes).
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{AxisAttrs, GatherNdAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("Gather", 1, gather),
    entry("GatherND", 11, gather_nd),
    entry("GatherElements", 11, gather_elements),
];

fn gather_elements(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let axis = cx.axis(cx.attr_int("axis", 0), cx.rank(0)?)?;
    Ok(Lowered::op(Op::GatherElements(AxisAttrs { axis }), &[0, 1]))
}

fn gather(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let axis = cx.axis(cx.attr_int("axis", 0), cx.rank(0)?)?;
    Ok(Lowered::op(Op::Gather(AxisAttrs { axis }), &[0, 1]))
}

fn gather_nd(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let b = cx.attr_int("batch_dims", 0);
    let batch_dims = usize::try_from(b).map_err(|_| cx.err(format!("negative batch_dims {b}")))?;
    Ok(Lowered::op(
        Op::GatherNd(GatherNdAttrs { batch_dims }),
        &[0, 1],
    ))
}
