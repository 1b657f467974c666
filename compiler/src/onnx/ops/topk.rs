//! TopK: <https://onnx.ai/onnx/operators/onnx__TopK.html> (10..=28; 11 adds `largest` and
//! `sorted`, 24 only adds element types): the `k` largest or smallest elements along `axis`
//! and their indices (i64), as [`Op::TopK`].
//!
//! `k` is an input from opset 10; it fixes the output shape, so it must be a constant at
//! import (the runtime's shapes are static): a model computing it from runtime values is
//! refused with an error naming the input. The output is always sorted (with `sorted = 0`
//! ONNX leaves the order unspecified, so sorted is a valid answer).
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::TopKAttrs;
use tessera_ir::{DType, Op};

pub(super) const OPS: &[OpEntry] = &[entry("TopK", 10, topk)];

fn topk(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    if x.dtype == DType::Bool {
        return Err(cx.err("expects a numeric input, got bool"));
    }
    let axis = cx.axis(cx.attr_int("axis", -1), x.shape.len())?;
    let kin = cx.input(1)?;
    let Some(kt) = kin.konst else {
        return Err(cx.err(format!(
            "input 1 (K, '{}') must be a constant: it fixes the output shape, and shapes \
             are static",
            kin.name
        )));
    };
    let [k] = kt.to_i64_vec()[..] else {
        return Err(cx.err(format!(
            "input 1 (K) must hold one value, got shape {:?}",
            kt.shape
        )));
    };
    let n = x.shape[axis];
    let k = usize::try_from(k).ok().filter(|&k| k <= n).ok_or_else(|| {
        cx.err(format!(
            "k = {k} must be in 0..={n} (the extent of axis {axis} of the input {:?})",
            x.shape
        ))
    })?;
    let largest = match cx.attr_int("largest", 1) {
        0 => false,
        1 => true,
        v => return Err(cx.err(format!("largest must be 0 or 1, got {v}"))),
    };
    Ok(Lowered::op(Op::TopK(TopKAttrs { axis, k, largest }), &[0]))
}
