//! Reductions.
//!
//! <https://onnx.ai/onnx/operators/onnx__ReduceMean.html> (and ReduceSum, ReduceMax,
//! ReduceMin, ReduceProd, ReduceSumSquare, ReduceL2), opsets 13..=23. `axes` is an attribute
//! before opset 18 (before 13 for ReduceSum) and a constant input from then on;
//! `noop_with_empty_axes` is honoured.
use super::elementwise::unary;
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{ReduceAttrs, ReduceKind, UnaryOp};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("ReduceMean", 1, |cx| reduce(cx, ReduceKind::Mean, 18)),
    entry("ReduceSum", 1, |cx| reduce(cx, ReduceKind::Sum, 13)),
    entry("ReduceMax", 1, |cx| reduce(cx, ReduceKind::Max, 18)),
    entry("ReduceMin", 1, |cx| reduce(cx, ReduceKind::Min, 18)),
    entry("ReduceProd", 1, |cx| reduce(cx, ReduceKind::Prod, 18)),
    entry("ReduceSumSquare", 1, |cx| {
        reduce(cx, ReduceKind::SumSquare, 18)
    }),
    entry("ReduceL2", 1, |cx| reduce(cx, ReduceKind::L2, 18)),
];

fn reduce(cx: &NodeCx, kind: ReduceKind, axes_input_since: i64) -> Result<Lowered, ImportError> {
    let rank = cx.rank(0)?;
    let given = if cx.opset >= axes_input_since {
        cx.opt_const_ints(1)?
    } else {
        cx.attr_ints("axes")
    };
    let given = given.unwrap_or_default();
    if given.is_empty() && cx.attr_int("noop_with_empty_axes", 0) != 0 {
        return unary(UnaryOp::Identity);
    }
    let axes = if given.is_empty() {
        (0..rank).collect()
    } else {
        cx.axes(&given, rank)?
    };
    let keepdims = cx.attr_int("keepdims", 1) != 0;
    Ok(Lowered::op(
        Op::Reduce(ReduceAttrs {
            kind,
            axes,
            keepdims,
        }),
        &[0],
    ))
}
