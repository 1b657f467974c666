//! Elementwise ops: Binary (Add, Mul, Less, And, ...), Unary (Exp, Relu, Not, ...), Gelu,
//! Clip, Where, Cast, HardSigmoid / HardSwish, Quantize, Dequantize. ONNX: <https://onnx.ai/onnx/operators/> (numpy broadcasting,
//! <https://onnx.ai/onnx/repo-docs/Broadcasting.html>).
//!
//! Cost: one FLOP per output element (GELU 8; Cast none, it converts). Partitioning: every one splits on
//! any output axis (`elementwise-split`); Add/Sub, Neg/Identity also pass partial sums
//! through (`linear-partial`), Mul/Div scale them (`scale-partial`).
use super::{first_numel, Arity, OpSpec, Partitioning};
use crate::infer::{broadcast_shapes, InferCx, TypedShape};
use crate::op::{
    BinaryAttrs, BinaryOp, CastAttrs, ClipAttrs, GeluAttrs, HardSigmoidAttrs, QuantizeAttrs,
    UnaryAttrs, UnaryOp,
};
use crate::{DType, IrError};

/// FLOPs (`$per` per output element), partitioning and elementwise-ness of an elementwise op.
macro_rules! pointwise {
    ($per:literal, |$s:ident| $partitioning:expr) => {
        fn flops(&self, _inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
            $per * first_numel(outputs)
        }
        fn partitioning(&self) -> Partitioning {
            let $s = self;
            $partitioning
        }
        fn is_elementwise(&self) -> bool {
            true
        }
    };
}

const SPLIT: Partitioning = Partitioning::Rules(&["elementwise-split"]);

impl OpSpec for BinaryAttrs {
    fn name(&self) -> String {
        // `Mod { fmod: true }` is named `Mod`.
        let debug = format!("{:?}", self.kind);
        debug.split(' ').next().unwrap_or("Binary").into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        binary(cx, self.kind).map(|o| vec![o])
    }
    pointwise!(1, |s| {
        match s.kind {
            BinaryOp::Add | BinaryOp::Sub => {
                Partitioning::Rules(&["elementwise-split", "linear-partial"])
            }
            BinaryOp::Mul | BinaryOp::Div => {
                Partitioning::Rules(&["elementwise-split", "scale-partial"])
            }
            _ => SPLIT,
        }
    });
}

impl OpSpec for UnaryAttrs {
    fn name(&self) -> String {
        format!("{:?}", self.kind)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        unary(cx, self.kind).map(|o| vec![o])
    }
    pointwise!(1, |s| {
        match s.kind {
            UnaryOp::Neg | UnaryOp::Identity => {
                Partitioning::Rules(&["elementwise-split", "linear-partial"])
            }
            _ => SPLIT,
        }
    });
}

/// GELU: <https://onnx.ai/onnx/operators/onnx__Gelu.html>.
impl OpSpec for GeluAttrs {
    fn name(&self) -> String {
        "Gelu".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        cx.float_input(0)?;
        Ok(vec![cx.input(0)])
    }
    pointwise!(8, |_s| SPLIT);
}

/// Clip: <https://onnx.ai/onnx/operators/onnx__Clip.html> (bounds folded to attributes).
impl OpSpec for ClipAttrs {
    fn name(&self) -> String {
        "Clip".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        if cx.inputs[0].0 == DType::Bool {
            return Err(cx.err("input 0 must be numeric, got bool"));
        }
        Ok(vec![cx.input(0)])
    }
    pointwise!(1, |_s| SPLIT);
}

/// The spec of [`crate::Op::Where`] (which has no attributes):
/// <https://onnx.ai/onnx/operators/onnx__Where.html>.
#[derive(Debug, Clone, Copy)]
pub struct WhereSpec;

impl OpSpec for WhereSpec {
    fn name(&self) -> String {
        "Where".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        where_(cx).map(|o| vec![o])
    }
    pointwise!(1, |_s| SPLIT);
}

/// Cast: <https://onnx.ai/onnx/operators/onnx__Cast.html>.
impl OpSpec for CastAttrs {
    fn name(&self) -> String {
        "Cast".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        Ok(vec![(self.to, cx.inputs[0].1.to_vec())])
    }
    /// A conversion, not arithmetic.
    fn flops(&self, _inputs: &[&[usize]], _outputs: &[&[usize]]) -> u64 {
        0
    }
    fn partitioning(&self) -> Partitioning {
        SPLIT
    }
    fn is_elementwise(&self) -> bool {
        true
    }
}

fn binary(cx: &InferCx, kind: BinaryOp) -> Result<TypedShape, IrError> {
    let d = cx.same_dtype(&[0, 1])?;
    let (a, b) = (cx.inputs[0].1, cx.inputs[1].1);
    let shape = broadcast_shapes(a, b)
        .ok_or_else(|| cx.err(format!("shapes {a:?} and {b:?} do not broadcast")))?;
    use BinaryOp::*;
    let out = match kind {
        And | Or | Xor => {
            if d.is_float() {
                return Err(cx.err(format!(
                    "logical/bitwise op needs bool or integer inputs, got {d}"
                )));
            }
            d
        }
        BitShift { .. } => {
            if !d.is_int() {
                return Err(cx.err(format!("BitShift needs integer inputs, got {d}")));
            }
            d
        }
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual => DType::Bool,
        Add | Sub | Mul | Div | Pow | Max | Min | Mod { .. } => {
            if d == DType::Bool {
                return Err(cx.err("arithmetic on bool inputs"));
            }
            d
        }
    };
    Ok((out, shape))
}

fn unary(cx: &InferCx, kind: UnaryOp) -> Result<TypedShape, IrError> {
    let (d, s) = cx.input(0);
    use UnaryOp::*;
    match kind {
        Not => {
            if d.is_float() {
                return Err(cx.err(format!("Not needs a bool or integer input, got {d}")));
            }
            Ok((d, s))
        }
        IsNaN => {
            cx.float_input(0)?;
            Ok((DType::Bool, s))
        }
        Identity => Ok((d, s)),
        Neg | Abs | Sign => {
            if d == DType::Bool {
                return Err(cx.err("numeric op on a bool input"));
            }
            Ok((d, s))
        }
        Sqrt | Reciprocal | Exp | Log | Erf | Tanh | Sigmoid | Relu | Floor | Ceil | Round
        | Sin | Cos | Softplus | Silu | Tan | Asin | Acos | Atan | Sinh | Cosh | Asinh | Acosh
        | Atanh => {
            if kind == Relu && d.is_int() {
                return Ok((d, s));
            }
            cx.float_input(0)?;
            Ok((d, s))
        }
    }
}

impl OpSpec for HardSigmoidAttrs {
    fn name(&self) -> String {
        if self.swish {
            "HardSwish"
        } else {
            "HardSigmoid"
        }
        .into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        cx.float_input(0)?;
        Ok(vec![cx.input(0)])
    }
    pointwise!(3, |_s| SPLIT);
}

/// The range of a quantised integer type: uint8, int8 or int16.
pub fn quant_range(d: DType) -> Option<(i32, i32)> {
    match d {
        DType::U8 => Some((0, 255)),
        DType::I8 => Some((-128, 127)),
        DType::I16 => Some((-32768, 32767)),
        _ => None,
    }
}

/// Scale and zero point (inputs 1 and 2): floats of one type that broadcast to input 0.
fn quant_params(cx: &InferCx) -> Result<DType, IrError> {
    cx.float_input(1)?;
    let d = cx.same_dtype(&[1, 2])?;
    let x = cx.inputs[0].1;
    for i in 1..3 {
        let p = cx.inputs[i].1;
        if broadcast_shapes(x, p).as_deref() != Some(x) {
            return Err(cx.err(format!("input {i} {p:?} does not broadcast to {x:?}")));
        }
    }
    Ok(d)
}

/// Quantize: QuantizeLinear of an activation
/// (<https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html>, opsets 10–23, per tensor or
/// per axis with Scale and ZeroPoint shaped to broadcast): `saturate(round(x / scale) +
/// zero_point)`, ties to even. A NaN quantises to 0 (as a Cast of NaN to an integer).
/// Canonicalisation finds it (rule `quantize`); the importer writes the primitive ops.
impl OpSpec for QuantizeAttrs {
    fn name(&self) -> String {
        "Quantize".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        if quant_range(self.to).is_none() {
            return Err(cx.err(format!(
                "quantised type {}: only uint8, int8 and int16",
                self.to
            )));
        }
        cx.float_input(0)?;
        quant_params(cx)?;
        Ok(vec![(self.to, cx.inputs[0].1.to_vec())])
    }
    pointwise!(3, |_s| SPLIT);
}

/// The spec of [`crate::Op::Dequantize`] (which has no attributes): DequantizeLinear of an
/// activation (<https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html>): `(q −
/// zero_point) · scale`, with the output of Scale's type.
#[derive(Debug, Clone, Copy)]
pub struct DequantizeSpec;

impl OpSpec for DequantizeSpec {
    fn name(&self) -> String {
        "Dequantize".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        let q = cx.inputs[0].0;
        if !q.is_int() {
            return Err(cx.err(format!("input 0 must be an integer tensor, got {q}")));
        }
        let d = quant_params(cx)?;
        Ok(vec![(d, cx.inputs[0].1.to_vec())])
    }
    pointwise!(2, |_s| SPLIT);
}

fn where_(cx: &InferCx) -> Result<TypedShape, IrError> {
    if cx.inputs[0].0 != DType::Bool {
        return Err(cx.err(format!("condition must be bool, got {}", cx.inputs[0].0)));
    }
    let d = cx.same_dtype(&[1, 2])?;
    let (c, x, y) = (cx.inputs[0].1, cx.inputs[1].1, cx.inputs[2].1);
    let s = broadcast_shapes(c, x)
        .and_then(|s| broadcast_shapes(&s, y))
        .ok_or_else(|| cx.err(format!("shapes {c:?}, {x:?}, {y:?} do not broadcast")))?;
    Ok((d, s))
}
