//! Scatters, as [`Op::ScatterElements`] and [`Op::ScatterNd`]:
//!
//! * ScatterElements: <https://onnx.ai/onnx/operators/onnx__ScatterElements.html>
//!   (11..=28; 13 adds element types, 16 `reduction` none/add/mul, 18 max/min)
//! * ScatterND: <https://onnx.ai/onnx/operators/onnx__ScatterND.html> (11..=28, the same
//!   versions)
//!
//! Both copy Data and write (or combine) Updates at the positions Indices name, negative
//! indices counting from the end; an index out of range is a runtime error naming the op.
//! Updates apply in row-major order of the indices (the ONNX reference's order), so without a
//! reduction the last of duplicate indices wins (ONNX leaves that case undefined). The
//! deprecated `Scatter` (opsets 9 and 10) is below Tessera's minimum opset.
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{ScatterElementsAttrs, ScatterNdAttrs, ScatterReduction};
use tessera_ir::{DType, Op};

pub(super) const OPS: &[OpEntry] = &[
    entry("ScatterElements", 11, scatter_elements),
    entry("ScatterND", 11, scatter_nd),
];

/// The `reduction` attribute (a string from opset 16; max and min from 18).
fn reduction(cx: &NodeCx) -> Result<ScatterReduction, ImportError> {
    let r = cx.attr_str("reduction").unwrap_or_else(|| "none".into());
    let red = match r.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" if cx.opset >= 18 => ScatterReduction::Max,
        "min" if cx.opset >= 18 => ScatterReduction::Min,
        _ => {
            return Err(cx.err(format!(
                "unknown reduction '{r}' at opset {} (none, add, mul; max and min from 18)",
                cx.opset
            )))
        }
    };
    if red != ScatterReduction::None && cx.input(0)?.dtype == DType::Bool {
        return Err(cx.err(format!("reduction '{r}' needs numbers, got bool data")));
    }
    Ok(red)
}

fn scatter_elements(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let axis = cx.axis(cx.attr_int("axis", 0), cx.rank(0)?)?;
    let reduction = reduction(cx)?;
    Ok(Lowered::op(
        Op::ScatterElements(ScatterElementsAttrs { axis, reduction }),
        &[0, 1, 2],
    ))
}

fn scatter_nd(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let reduction = reduction(cx)?;
    Ok(Lowered::op(
        Op::ScatterNd(ScatterNdAttrs { reduction }),
        &[0, 1, 2],
    ))
}
