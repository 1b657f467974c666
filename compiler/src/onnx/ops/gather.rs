//! Gathers.
//!
//! * Gather: <https://onnx.ai/onnx/operators/onnx__Gather.html> (13..=23)
//! * GatherND: <https://onnx.ai/onnx/operators/onnx__GatherND.html> (13..=23)
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{AxisAttrs, GatherNdAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[entry("Gather", 1, gather), entry("GatherND", 11, gather_nd)];

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
