//! Bitwise ops on integers, as the IR's logical ops (which are bitwise on integer operands,
//! as numpy's `&`, `|`, `^`, `~`) and [`BinaryOp::BitShift`]:
//!
//! * BitwiseAnd, BitwiseOr, BitwiseXor: <https://onnx.ai/onnx/operators/onnx__BitwiseAnd.html>
//!   etc. (18..=28): `Binary(And | Or | Xor)`, numpy broadcasting
//! * BitwiseNot: <https://onnx.ai/onnx/operators/onnx__BitwiseNot.html> (18..=28):
//!   `Unary(Not)`
//! * BitShift: <https://onnx.ai/onnx/operators/onnx__BitShift.html> (11..=28; 28 adds the
//!   signed types and spells out their rules, which hold for the unsigned ones too):
//!   `direction` LEFT or RIGHT; right shifts of signed values are arithmetic; a shift by a
//!   negative amount or by the bit width or more gives 0 (-1 for a right shift of a negative
//!   value)
//!
//! Integers only (int8/16/32/64 and uint8; uint16/32/64 are not Tessera dtypes); a float or
//! bool input is an error naming the node.
use super::elementwise::{bin, unary};
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, UnaryOp};

pub(super) const OPS: &[OpEntry] = &[
    entry("BitwiseAnd", 18, |cx| bitwise(cx, BinaryOp::And)),
    entry("BitwiseOr", 18, |cx| bitwise(cx, BinaryOp::Or)),
    entry("BitwiseXor", 18, |cx| bitwise(cx, BinaryOp::Xor)),
    entry("BitwiseNot", 18, |cx| {
        integers(cx, 1)?;
        unary(UnaryOp::Not)
    }),
    entry("BitShift", 11, bit_shift),
];

/// The first `n` inputs must be integers.
fn integers(cx: &NodeCx, n: usize) -> Result<(), ImportError> {
    for i in 0..n {
        let d = cx.input(i)?.dtype;
        if !d.is_int() {
            return Err(cx.err(format!("input {i} must be an integer tensor, got {d}")));
        }
    }
    Ok(())
}

fn bitwise(cx: &NodeCx, kind: BinaryOp) -> Result<Lowered, ImportError> {
    integers(cx, 2)?;
    Ok(Lowered::op(bin(kind), &[0, 1]))
}

fn bit_shift(cx: &NodeCx) -> Result<Lowered, ImportError> {
    integers(cx, 2)?;
    // `direction` is required: the attribute check refuses a node without it.
    let dir = cx.attr_str("direction").unwrap_or_default();
    let left = match dir.as_str() {
        "LEFT" => true,
        "RIGHT" => false,
        _ => return Err(cx.err(format!("direction must be LEFT or RIGHT, got '{dir}'"))),
    };
    Ok(Lowered::op(bin(BinaryOp::BitShift { left }), &[0, 1]))
}
