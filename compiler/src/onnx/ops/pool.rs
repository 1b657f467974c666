//! Pooling.
//!
//! * MaxPool: <https://onnx.ai/onnx/operators/onnx__MaxPool.html> (1..=28; ceil_mode,
//!   dilations, pads, auto_pad; the Indices output is refused when it is used)
//! * AveragePool: <https://onnx.ai/onnx/operators/onnx__AveragePool.html> (1..=28;
//!   count_include_pad, ceil_mode, dilations)
//! * GlobalAveragePool / GlobalMaxPool: <https://onnx.ai/onnx/operators/onnx__GlobalAveragePool.html>
//!   (1..=28), imported as a mean / max reduction over the spatial axes
use super::conv::window_attrs;
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{PoolAttrs, PoolKind, ReduceAttrs, ReduceKind};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("MaxPool", 1, |cx| pool(cx, PoolKind::Max)),
    entry("AveragePool", 1, |cx| pool(cx, PoolKind::Average)),
    entry("GlobalAveragePool", 1, |cx| global(cx, ReduceKind::Mean)),
    entry("GlobalMaxPool", 1, |cx| global(cx, ReduceKind::Max)),
];

fn pool(cx: &NodeCx, kind: PoolKind) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?.shape;
    if x.len() < 3 {
        return Err(cx.err(format!("X {x:?} must be [N, C, D1..]")));
    }
    if cx.output_used(1) {
        return Err(cx.err("the Indices output is not supported"));
    }
    if cx.attr_int("storage_order", 0) != 0 {
        return Err(cx.err("storage_order=1 is not supported"));
    }
    let mut w = window_attrs(cx, x.len() - 2, None)?;
    w.resolve_same(&x[2..]);
    Ok(Lowered::op(
        Op::Pool(PoolAttrs {
            kind,
            kernel: w.kernel,
            strides: w.strides,
            dilations: w.dilations,
            pads: w.pads,
            ceil_mode: cx.attr_int("ceil_mode", 0) != 0,
            count_include_pad: cx.attr_int("count_include_pad", 0) != 0,
        }),
        &[0],
    ))
}

fn global(cx: &NodeCx, kind: ReduceKind) -> Result<Lowered, ImportError> {
    let rank = cx.rank(0)?;
    if rank < 3 {
        return Err(cx.err(format!("X of rank {rank} must be [N, C, D1..]")));
    }
    Ok(Lowered::op(
        Op::Reduce(ReduceAttrs {
            kind,
            axes: (2..rank).collect(),
            keepdims: true,
        }),
        &[0],
    ))
}
