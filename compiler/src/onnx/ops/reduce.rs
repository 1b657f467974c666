//! Reductions.
//!
//! * <https://onnx.ai/onnx/operators/onnx__ReduceMean.html> (and ReduceSum, ReduceMax,
//!   ReduceMin, ReduceProd, ReduceSumSquare, ReduceL2), opsets 13..=23. `axes` is an
//!   attribute before opset 18 (before 13 for ReduceSum) and a constant input from then on;
//!   `noop_with_empty_axes` is honoured.
//! * ReduceL1 (13..=28), ReduceLogSum and ReduceLogSumExp (13..=28; version 28 only drops
//!   integer inputs, which Tessera refuses at every opset): lowered at import, with the same
//!   `axes` forms. ReduceL1 = ReduceSum(Abs(x)); ReduceLogSum = Log(ReduceSum(x));
//!   ReduceLogSumExp = Log(ReduceSum(Exp(x − m))) + m with m the ReduceMax clipped to the
//!   finite range (so that all -inf or +inf stays -inf / +inf rather than NaN, and no
//!   exponential overflows: onnxruntime's and the ONNX reference's max shift). With
//!   `noop_with_empty_axes` and no axes they are elementwise: |x|, log x and x.
//! * ArgMax / ArgMin: <https://onnx.ai/onnx/operators/onnx__ArgMax.html> (13..=28): `axis`,
//!   `keepdims`, `select_last_index`; i64 output.
use super::activation_extra::{float_input, unary, Chain};
use super::elementwise::{bin, unary as unary_node};
use super::{entry, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{
    ArgReduceAttrs, BinaryOp, ClipAttrs, ReduceAttrs, ReduceKind, ReshapeAttrs, UnaryOp,
};
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
    entry("ReduceL1", 1, reduce_l1),
    entry("ReduceLogSum", 1, reduce_log_sum),
    entry("ReduceLogSumExp", 1, reduce_log_sum_exp),
    entry("ArgMax", 1, |cx| arg_reduce(cx, true)),
    entry("ArgMin", 1, |cx| arg_reduce(cx, false)),
];

/// The reduced axes of a reduction node (sorted, non-negative; every axis when none are
/// given), or `None` when `noop_with_empty_axes` makes it reduce nothing; and keepdims.
fn axes_of(cx: &NodeCx, axes_input_since: i64) -> Result<(Option<Vec<usize>>, bool), ImportError> {
    let rank = cx.rank(0)?;
    let given = if cx.opset >= axes_input_since {
        cx.opt_const_ints(1)?
    } else {
        cx.attr_ints("axes")
    };
    let given = given.unwrap_or_default();
    let keepdims = cx.attr_int("keepdims", 1) != 0;
    if given.is_empty() && cx.attr_int("noop_with_empty_axes", 0) != 0 {
        return Ok((None, keepdims));
    }
    let axes = if given.is_empty() {
        (0..rank).collect()
    } else {
        cx.axes(&given, rank)?
    };
    Ok((Some(axes), keepdims))
}

fn reduce_op(kind: ReduceKind, axes: Vec<usize>, keepdims: bool) -> Op {
    Op::Reduce(ReduceAttrs {
        kind,
        axes,
        keepdims,
    })
}

fn reduce(cx: &NodeCx, kind: ReduceKind, axes_input_since: i64) -> Result<Lowered, ImportError> {
    match axes_of(cx, axes_input_since)? {
        (None, _) => unary_node(UnaryOp::Identity),
        (Some(axes), keepdims) => Ok(Lowered::op(reduce_op(kind, axes, keepdims), &[0])),
    }
}

fn reduce_l1(cx: &NodeCx) -> Result<Lowered, ImportError> {
    if cx.input(0)?.dtype == tessera_ir::DType::Bool {
        return Err(cx.err("expects a numeric input, got bool"));
    }
    let (axes, keepdims) = axes_of(cx, 18)?;
    let mut c = Chain::default();
    let abs = c.push(unary(UnaryOp::Abs), vec![Ref::In(0)]);
    if let Some(axes) = axes {
        c.push(reduce_op(ReduceKind::Sum, axes, keepdims), vec![abs]);
    }
    Ok(c.done())
}

fn reduce_log_sum(cx: &NodeCx) -> Result<Lowered, ImportError> {
    float_input(cx)?;
    let (axes, keepdims) = axes_of(cx, 18)?;
    let mut c = Chain::default();
    let sum = match axes {
        Some(axes) => c.push(reduce_op(ReduceKind::Sum, axes, keepdims), vec![Ref::In(0)]),
        None => Ref::In(0),
    };
    c.push(unary(UnaryOp::Log), vec![sum]);
    Ok(c.done())
}

fn reduce_log_sum_exp(cx: &NodeCx) -> Result<Lowered, ImportError> {
    float_input(cx)?;
    let (axes, keepdims) = axes_of(cx, 18)?;
    let Some(axes) = axes else {
        return unary_node(UnaryOp::Identity);
    };
    let shape = cx.input(0)?.shape;
    let mut c = Chain::default();
    let max = c.push(
        reduce_op(ReduceKind::Max, axes.clone(), true),
        vec![Ref::In(0)],
    );
    let m = c.push(
        Op::Clip(ClipAttrs {
            min: Some(f32::MIN),
            max: Some(f32::MAX),
        }),
        vec![max],
    );
    let shifted = c.push(bin(BinaryOp::Sub), vec![Ref::In(0), m.clone()]);
    let e = c.push(unary(UnaryOp::Exp), vec![shifted]);
    let sum = c.push(reduce_op(ReduceKind::Sum, axes.clone(), keepdims), vec![e]);
    let log = c.push(unary(UnaryOp::Log), vec![sum]);
    let m_out = if keepdims {
        m
    } else {
        let out: Vec<usize> = (0..shape.len())
            .filter(|a| !axes.contains(a))
            .map(|a| shape[a])
            .collect();
        c.push(Op::Reshape(ReshapeAttrs { shape: out }), vec![m])
    };
    c.push(bin(BinaryOp::Add), vec![log, m_out]);
    Ok(c.done())
}

fn arg_reduce(cx: &NodeCx, max: bool) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    if x.dtype == tessera_ir::DType::Bool {
        return Err(cx.err("expects a numeric input, got bool"));
    }
    let axis = cx.axis(cx.attr_int("axis", 0), x.shape.len())?;
    if x.shape[axis] == 0 {
        return Err(cx.err(format!(
            "axis {axis} of the input (shape {:?}) is empty: no element to select",
            x.shape
        )));
    }
    let last = match cx.attr_int("select_last_index", 0) {
        0 => false,
        1 => true,
        v => return Err(cx.err(format!("select_last_index must be 0 or 1, got {v}"))),
    };
    Ok(Lowered::op(
        Op::ArgReduce(ArgReduceAttrs {
            max,
            axis,
            keepdims: cx.attr_int("keepdims", 1) != 0,
            select_last_index: last,
        }),
        &[0],
    ))
}
