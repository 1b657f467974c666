//! Elementwise arithmetic: binary ops with numpy broadcasting, n-ary Sum/Mean, and unary
//! math.
//!
//! * Add/Sub/Mul/Div: <https://onnx.ai/onnx/operators/onnx__Add.html> (opsets 13..=23)
//! * Pow: <https://onnx.ai/onnx/operators/onnx__Pow.html> (13..=23; an exponent of another
//!   dtype is cast to the base dtype)
//! * Mod: <https://onnx.ai/onnx/operators/onnx__Mod.html> (13..=23)
//! * Sum / Mean: <https://onnx.ai/onnx/operators/onnx__Sum.html> (13..=23, chained binary ops)
//! * Neg, Abs, Sqrt, Reciprocal, Exp, Log, Floor, Ceil, Round, Sin, Cos, Sign:
//!   <https://onnx.ai/onnx/operators/onnx__Sqrt.html> etc. (13..=23)
//! * Tan, Asin, Acos, Atan (7..=28), Sinh, Cosh, Asinh, Acosh, Atanh (9..=28):
//!   <https://onnx.ai/onnx/operators/onnx__Tan.html> etc. (version 22 only adds bfloat16)
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryAttrs, BinaryOp, CastAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::{Op, Tensor};

pub(super) const OPS: &[OpEntry] = &[
    entry("Add", 1, |cx| binary(cx, BinaryOp::Add)),
    entry("Sub", 1, |cx| binary(cx, BinaryOp::Sub)),
    entry("Mul", 1, |cx| binary(cx, BinaryOp::Mul)),
    entry("Div", 1, |cx| binary(cx, BinaryOp::Div)),
    entry("Pow", 1, pow),
    entry("Mod", 10, |cx| {
        binary(
            cx,
            BinaryOp::Mod {
                fmod: cx.attr_int("fmod", 0) != 0,
            },
        )
    }),
    entry("Sum", 1, |cx| nary(cx, BinaryOp::Add, false)),
    entry("Mean", 1, |cx| nary(cx, BinaryOp::Add, true)),
    entry("Neg", 1, |_| unary(UnaryOp::Neg)),
    entry("Abs", 1, |_| unary(UnaryOp::Abs)),
    entry("Sqrt", 1, |_| unary(UnaryOp::Sqrt)),
    entry("Reciprocal", 1, |_| unary(UnaryOp::Reciprocal)),
    entry("Exp", 1, |_| unary(UnaryOp::Exp)),
    entry("Log", 1, |_| unary(UnaryOp::Log)),
    entry("Floor", 1, |_| unary(UnaryOp::Floor)),
    entry("Ceil", 1, |_| unary(UnaryOp::Ceil)),
    entry("Round", 11, |_| unary(UnaryOp::Round)),
    entry("Sin", 7, |_| unary(UnaryOp::Sin)),
    entry("Cos", 7, |_| unary(UnaryOp::Cos)),
    entry("Sign", 9, |_| unary(UnaryOp::Sign)),
    entry("Tan", 7, |_| unary(UnaryOp::Tan)),
    entry("Asin", 7, |_| unary(UnaryOp::Asin)),
    entry("Acos", 7, |_| unary(UnaryOp::Acos)),
    entry("Atan", 7, |_| unary(UnaryOp::Atan)),
    entry("Sinh", 9, |_| unary(UnaryOp::Sinh)),
    entry("Cosh", 9, |_| unary(UnaryOp::Cosh)),
    entry("Asinh", 9, |_| unary(UnaryOp::Asinh)),
    entry("Acosh", 9, |_| unary(UnaryOp::Acosh)),
    entry("Atanh", 9, |_| unary(UnaryOp::Atanh)),
];

/// A binary op.
pub(super) fn bin(kind: BinaryOp) -> Op {
    Op::Binary(BinaryAttrs { kind })
}

fn binary(_cx: &NodeCx, kind: BinaryOp) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(bin(kind), &[0, 1]))
}

/// A unary op on input 0.
pub(super) fn unary(kind: UnaryOp) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(Op::Unary(UnaryAttrs { kind }), &[0]))
}

fn pow(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (base, exp) = (cx.input(0)?.dtype, cx.input(1)?.dtype);
    if base == exp {
        return Ok(Lowered::op(bin(BinaryOp::Pow), &[0, 1]));
    }
    Ok(Lowered::Steps(vec![
        Step {
            op: Op::Cast(CastAttrs { to: base }),
            inputs: vec![Ref::In(1)],
        },
        Step {
            op: bin(BinaryOp::Pow),
            inputs: vec![Ref::In(0), Ref::Prev(0, 0)],
        },
    ]))
}

/// Folds n inputs with a binary op (left to right); `mean` divides by n at the end.
pub(super) fn nary(cx: &NodeCx, kind: BinaryOp, mean: bool) -> Result<Lowered, ImportError> {
    let n = cx.n_inputs();
    if n == 0 {
        return Err(cx.err("needs at least one input"));
    }
    for i in 0..n {
        cx.input(i)?;
    }
    let mut steps = Vec::new();
    if n == 1 {
        steps.push(Step {
            op: Op::Unary(UnaryAttrs {
                kind: UnaryOp::Identity,
            }),
            inputs: vec![Ref::In(0)],
        });
    }
    for i in 1..n {
        let acc = if i == 1 {
            Ref::In(0)
        } else {
            Ref::Prev(steps.len() - 1, 0)
        };
        steps.push(Step {
            op: bin(kind),
            inputs: vec![acc, Ref::In(i)],
        });
    }
    if mean {
        let d = cx.input(0)?.dtype;
        if !d.is_float() {
            return Err(cx.err(format!("Mean of {d} inputs is not supported")));
        }
        let divisor = Tensor {
            dtype: d,
            ..Tensor::f32(vec![], vec![n as f32])
        };
        steps.push(Step {
            op: bin(BinaryOp::Div),
            inputs: vec![Ref::Prev(steps.len() - 1, 0), Ref::Const(divisor)],
        });
    }
    Ok(Lowered::Steps(steps))
}
