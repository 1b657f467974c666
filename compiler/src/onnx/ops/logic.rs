//! Comparisons, logic and selection.
//!
//! * Where: <https://onnx.ai/onnx/operators/onnx__Where.html> (13..=23)
//! * Equal, Less, LessOrEqual, Greater, GreaterOrEqual:
//!   <https://onnx.ai/onnx/operators/onnx__Equal.html> etc. (13..=23)
//! * Not, And, Or, Xor: <https://onnx.ai/onnx/operators/onnx__Not.html> etc. (13..=23)
//! * IsNaN: <https://onnx.ai/onnx/operators/onnx__IsNaN.html> (13..=23)
use super::elementwise::{bin, unary};
use super::{entry, Lowered, OpEntry};
use tessera_ir::op::{BinaryOp, UnaryOp};
use tessera_ir::Op;

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
    entry("And", 1, |_| Ok(Lowered::op(bin(BinaryOp::And), &[0, 1]))),
    entry("Or", 1, |_| Ok(Lowered::op(bin(BinaryOp::Or), &[0, 1]))),
    entry("Xor", 1, |_| Ok(Lowered::op(bin(BinaryOp::Xor), &[0, 1]))),
    entry("Not", 1, |_| unary(UnaryOp::Not)),
    entry("IsNaN", 9, |_| unary(UnaryOp::IsNaN)),
];
