//! Miscellaneous: Trilu, CumSum and n-ary Max/Min.
//!
//! * Trilu: <https://onnx.ai/onnx/operators/onnx__Trilu.html> (14..=23; `k` must be constant)
//! * CumSum: <https://onnx.ai/onnx/operators/onnx__CumSum.html> (14..=23; `axis` must be
//!   constant)
//! * Max / Min: <https://onnx.ai/onnx/operators/onnx__Max.html> (13..=23; n inputs become a
//!   chain of binary ops)
use super::elementwise::nary;
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, CumSumAttrs, TriluAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("Trilu", 14, trilu),
    entry("CumSum", 11, cumsum),
    entry("Max", 1, |cx| nary(cx, BinaryOp::Max, false)),
    entry("Min", 1, |cx| nary(cx, BinaryOp::Min, false)),
];

fn scalar(cx: &NodeCx, i: usize) -> Result<Option<i64>, ImportError> {
    match cx.opt_const_ints(i)?.as_deref() {
        None => Ok(None),
        Some([v]) => Ok(Some(*v)),
        Some(v) => Err(cx.err(format!("input {i} must be a scalar, got {v:?}"))),
    }
}

fn trilu(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let k = scalar(cx, 1)?.unwrap_or(0);
    Ok(Lowered::op(
        Op::Trilu(TriluAttrs {
            upper: cx.attr_int("upper", 1) != 0,
            k,
        }),
        &[0],
    ))
}

fn cumsum(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let a = scalar(cx, 1)?.ok_or_else(|| cx.err("missing axis input"))?;
    let axis = cx.axis(a, cx.rank(0)?)?;
    let attrs = CumSumAttrs {
        axis,
        exclusive: cx.attr_int("exclusive", 0) != 0,
        reverse: cx.attr_int("reverse", 0) != 0,
    };
    Ok(Lowered::op(Op::CumSum(attrs), &[0]))
}
