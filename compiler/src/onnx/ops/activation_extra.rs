//! Parametric and composite activations, lowered at import into elementwise IR ops (which the
//! runtime's elementwise fusion then runs as one pass, and which partition as any
//! elementwise op does):
//!
//! * LeakyRelu: <https://onnx.ai/onnx/operators/onnx__LeakyRelu.html> (6..=28):
//!   `max(x, 0) + alpha·min(x, 0)`
//! * PRelu: <https://onnx.ai/onnx/operators/onnx__PRelu.html> (9..=28; `slope` broadcasts
//!   to X): `max(x, 0) + slope·min(x, 0)`
//! * Elu: <https://onnx.ai/onnx/operators/onnx__Elu.html> (6..=28):
//!   `max(x, 0) + alpha·(exp(min(x, 0)) − 1)`
//! * Selu: <https://onnx.ai/onnx/operators/onnx__Selu.html> (6..=28):
//!   `gamma·(max(x, 0) + alpha·(exp(min(x, 0)) − 1))`
//! * Celu: <https://onnx.ai/onnx/operators/onnx__Celu.html> (12..=28):
//!   `max(x, 0) + alpha·(exp(min(x, 0) / alpha) − 1)`
//! * ThresholdedRelu: <https://onnx.ai/onnx/operators/onnx__ThresholdedRelu.html> (10..=28):
//!   `Where(x > alpha, x, 0)`
//! * Softsign: <https://onnx.ai/onnx/operators/onnx__Softsign.html> (1..=28): `x / (1 + |x|)`
//! * Mish: <https://onnx.ai/onnx/operators/onnx__Mish.html> (18..=28):
//!   `x·tanh(softplus(x))`, ONNX's own function body
//!
//! The `max`/`min` split is exact: for x ≥ 0 the negative branch is `alpha·0` or
//! `exp(0) − 1 = 0`, for x < 0 the positive one is 0, so each side is the ONNX formula's
//! value, bit for bit.
use super::elementwise::bin;
use super::{entry, Lowered, NodeCx, OpEntry, Ref, Step};
use crate::onnx::ImportError;
use tessera_ir::infer::broadcast_shapes;
use tessera_ir::op::{BinaryOp, UnaryAttrs, UnaryOp};
use tessera_ir::{DType, Op, Tensor};

pub(super) const OPS: &[OpEntry] = &[
    entry("LeakyRelu", 6, |cx| {
        let x = float_input(cx)?;
        let alpha = cx.attr_float("alpha", 0.01);
        leaky(x, Ref::Const(scalar(x, alpha.into())))
    }),
    entry("PRelu", 9, prelu),
    entry("Elu", 6, |cx| {
        let x = float_input(cx)?;
        elu(x, cx.attr_float("alpha", 1.0), None, 1.0)
    }),
    entry("Selu", 6, |cx| {
        let x = float_input(cx)?;
        let alpha = cx.attr_float("alpha", 1.673_263_2);
        let gamma = cx.attr_float("gamma", 1.050_701);
        elu(x, alpha, Some(gamma), 1.0)
    }),
    entry("Celu", 12, |cx| {
        let x = float_input(cx)?;
        let alpha = cx.attr_float("alpha", 1.0);
        if alpha == 0.0 || !alpha.is_finite() {
            return Err(cx.err(format!("alpha must be finite and non-zero, got {alpha}")));
        }
        elu(x, alpha, None, alpha)
    }),
    entry("ThresholdedRelu", 10, |cx| {
        let x = float_input(cx)?;
        let alpha = cx.attr_float("alpha", 1.0);
        let mut c = Chain::default();
        let gt = c.push(
            bin(BinaryOp::Greater),
            vec![Ref::In(0), konst(x, alpha.into())],
        );
        c.push(Op::Where, vec![gt, Ref::In(0), konst(x, 0.0)]);
        Ok(c.done())
    }),
    entry("Softsign", 1, |cx| {
        let x = float_input(cx)?;
        let mut c = Chain::default();
        let abs = c.push(unary(UnaryOp::Abs), vec![Ref::In(0)]);
        let den = c.push(bin(BinaryOp::Add), vec![abs, konst(x, 1.0)]);
        c.push(bin(BinaryOp::Div), vec![Ref::In(0), den]);
        Ok(c.done())
    }),
    entry("Mish", 18, |cx| {
        float_input(cx)?;
        let mut c = Chain::default();
        let sp = c.push(unary(UnaryOp::Softplus), vec![Ref::In(0)]);
        let th = c.push(unary(UnaryOp::Tanh), vec![sp]);
        c.push(bin(BinaryOp::Mul), vec![Ref::In(0), th]);
        Ok(c.done())
    }),
];

/// A lowering under construction: steps whose outputs later steps read.
#[derive(Default)]
pub(super) struct Chain {
    steps: Vec<Step>,
}

impl Chain {
    /// Appends a step; returns a reference to its (first) output.
    pub(super) fn push(&mut self, op: Op, inputs: Vec<Ref>) -> Ref {
        self.steps.push(Step { op, inputs });
        Ref::Prev(self.steps.len() - 1, 0)
    }

    /// The lowering: the last step's output is the node's.
    pub(super) fn done(self) -> Lowered {
        Lowered::Steps(self.steps)
    }

    /// The lowering of a node with several outputs: node output `i` is `outputs[i]`, each
    /// a step output returned by [`Chain::push`].
    pub(super) fn picked(self, outputs: &[Ref]) -> Result<Lowered, String> {
        let outputs = outputs
            .iter()
            .map(|r| match r {
                Ref::Prev(j, k) => Ok((*j, *k)),
                _ => Err("a picked output must be a step's output".to_string()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Lowered::Picked {
            steps: self.steps,
            outputs,
        })
    }
}

/// A unary op.
pub(super) fn unary(kind: UnaryOp) -> Op {
    Op::Unary(UnaryAttrs { kind })
}

/// A scalar constant of dtype `d` (floats hold f32 storage, integers i64).
pub(super) fn scalar(d: DType, v: f64) -> Tensor {
    if d.is_float() {
        Tensor {
            dtype: d,
            ..Tensor::f32(vec![], vec![v as f32])
        }
    } else {
        Tensor {
            dtype: d,
            ..Tensor::i64(vec![], vec![v as i64])
        }
    }
}

/// A scalar constant input of dtype `d`.
pub(super) fn konst(d: DType, v: f64) -> Ref {
    Ref::Const(scalar(d, v))
}

/// The dtype of input 0, which must be a float.
pub(super) fn float_input(cx: &NodeCx) -> Result<DType, ImportError> {
    let d = cx.input(0)?.dtype;
    if !d.is_float() {
        return Err(cx.err(format!("expects a float input, got {d}")));
    }
    Ok(d)
}

/// `max(x, 0) + slope·min(x, 0)` for input 0 and the given slope.
fn leaky(d: DType, slope: Ref) -> Result<Lowered, ImportError> {
    let mut c = Chain::default();
    let pos = c.push(bin(BinaryOp::Max), vec![Ref::In(0), konst(d, 0.0)]);
    let neg = c.push(bin(BinaryOp::Min), vec![Ref::In(0), konst(d, 0.0)]);
    let scaled = c.push(bin(BinaryOp::Mul), vec![neg, slope]);
    c.push(bin(BinaryOp::Add), vec![pos, scaled]);
    Ok(c.done())
}

/// PRelu: the slope (input 1) must broadcast to X's shape (unidirectional broadcasting).
fn prelu(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (x, slope) = (cx.input(0)?, cx.input(1)?);
    if x.dtype == DType::Bool || x.dtype != slope.dtype {
        return Err(cx.err(format!(
            "X and slope must have one numeric dtype, got {} and {}",
            x.dtype, slope.dtype
        )));
    }
    if broadcast_shapes(x.shape, slope.shape).as_deref() != Some(x.shape) {
        return Err(cx.err(format!(
            "slope of shape {:?} does not broadcast to X's shape {:?}",
            slope.shape, x.shape
        )));
    }
    leaky(x.dtype, Ref::In(1))
}

/// `gamma·(max(x, 0) + alpha·(exp(min(x, 0) / div) − 1))` (Elu: gamma none, div 1; Selu:
/// div 1; Celu: gamma none, div alpha).
fn elu(d: DType, alpha: f32, gamma: Option<f32>, div: f32) -> Result<Lowered, ImportError> {
    let mut c = Chain::default();
    let pos = c.push(bin(BinaryOp::Max), vec![Ref::In(0), konst(d, 0.0)]);
    let mut neg = c.push(bin(BinaryOp::Min), vec![Ref::In(0), konst(d, 0.0)]);
    if div != 1.0 {
        neg = c.push(bin(BinaryOp::Div), vec![neg, konst(d, div.into())]);
    }
    let e = c.push(unary(UnaryOp::Exp), vec![neg]);
    let em1 = c.push(bin(BinaryOp::Sub), vec![e, konst(d, 1.0)]);
    let scaled = c.push(bin(BinaryOp::Mul), vec![em1, konst(d, alpha.into())]);
    let sum = c.push(bin(BinaryOp::Add), vec![pos, scaled]);
    if let Some(g) = gamma {
        c.push(bin(BinaryOp::Mul), vec![sum, konst(d, g.into())]);
    }
    Ok(c.done())
}
