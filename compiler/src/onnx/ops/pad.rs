//! Pad: <https://onnx.ai/onnx/operators/onnx__Pad.html> (11..=28): constant, reflect, edge
//! and (19+) wrap modes; `pads`, `constant_value` and (18+) `axes` must be constants.
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{PadAttrs, PadMode};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[entry("Pad", 11, pad)];

fn pad(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let rank = cx.rank(0)?;
    let mode = match cx.attr_str("mode").as_deref() {
        None | Some("constant") => PadMode::Constant,
        Some("reflect") => PadMode::Reflect,
        Some("edge") => PadMode::Edge,
        Some("wrap") => PadMode::Wrap,
        Some(other) => return Err(cx.err(format!("unknown mode '{other}'"))),
    };
    let given = cx.const_input(1)?.to_i64_vec();
    let axes = match cx.opt_const_ints(3)? {
        Some(a) => a
            .iter()
            .map(|&a| cx.axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).collect(),
    };
    if given.len() != 2 * axes.len() {
        return Err(cx.err(format!(
            "pads {given:?} must have {} entries (2 per padded axis)",
            2 * axes.len()
        )));
    }
    let mut pads = vec![0i64; 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = given[i];
        pads[rank + a] = given[axes.len() + i];
    }
    let value = match cx.opt_input(2) {
        None => 0.0,
        Some(_) => {
            let t = cx.const_input(2)?;
            match t.to_f64_vec().as_slice() {
                [] => 0.0,
                [v] if t.dtype.is_int() && f64::from(*v as f32) != *v => {
                    return Err(cx.err(format!(
                        "constant_value {v} is not exactly representable as f32"
                    )))
                }
                [v] => *v as f32,
                _ => {
                    return Err(cx.err(format!(
                        "constant_value must be a scalar, got shape {:?}",
                        t.shape
                    )))
                }
            }
        }
    };
    Ok(Lowered::op(Op::Pad(PadAttrs { pads, mode, value }), &[0]))
}
