//! Comparisons, logic and selection.
//!
//! * Where: <https://onnx.ai/onnx/operators/onnx__Where.html> (13..=23)
//! * Equal, Less, LessOrEqual, Greater, GreaterOrEqual:
//!   <https://onnx.ai/onnx/operators/onnx__Equal.html> etc. (13..=23)
//! * Not, And, Or, Xor: <https://onnx.ai/onnx/operators/onnx__Not.html> etc. (13..=23);
//!   bool only (the IR ops are bitwise on integers: BitwiseAnd etc., `bitwise.rs`)
//! * IsNaN: <https://onnx.ai/onnx/operators/onnx__IsNaN.html> (13..=23)
use super::elementwise::{bin, unary};
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::{DType, Op};

pub(super) const OPS: &[OpEntry] = &[
    entry("Where", 9, |_| Ok(Lowered::op(Op::Where, &[0, 1, 2]))),
    entry("Equal", 1, |_| {
        Ok(Lowered::op(bin(BinaryOp::Equal), &[0, 1]))
    }),
    entry("Less", 1, |_| Ok(Lowered::op(bin(BinaryOp::Less), &[0, 1]))),
    entry("LessOrEqual", 12, |_| {
        Ok(Lowered::op(bin(BinaryOp::LessOrEqual), &[0, 1]))
    }),
    entry("Greater", 1, |_| {
        Ok(Lowered::op(bin(BinaryOp::Greater), &[0, 1]))
    }),
    entry("GreaterOrEqual", 12, |_| {
        Ok(Lowered::op(bin(BinaryOp::GreaterOrEqual), &[0, 1]))
    }),
    entry("And", 1, |cx| logical(cx, BinaryOp::And)),
    entry("Or", 1, |cx| logical(cx, BinaryOp::Or)),
    entry("Xor", 1, |cx| logical(cx, BinaryOp::Xor)),
    entry("Not", 1, |cx| {
        bools(cx, 1)?;
        unary(UnaryOp::Not)
    }),
    entry("IsNaN", 9, |_| unary(UnaryOp::IsNaN)),
];

/// The first `n` inputs must be bool (ONNX's logical ops take nothing else).
fn bools(cx: &NodeCx, n: usize) -> Result<(), ImportError> {
    for i in 0..n {
        let d = cx.input(i)?.dtype;
        if d != DType::Bool {
            return Err(cx.err(format!("input {i} must be bool, got {d}")));
        }
    }
    Ok(())
}

fn logical(cx: &NodeCx, kind: BinaryOp) -> Result<Lowered, ImportError> {
    bools(cx, 2)?;
    Ok(Lowered::op(bin(kind), &[0, 1]))
}
