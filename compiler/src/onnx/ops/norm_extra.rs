//! Normalisations and a thresholding op lowered at import to reductions, pooling and
//! elementwise ops (which partition and run as those do):
//!
//! * LpNormalization: <https://onnx.ai/onnx/operators/onnx__LpNormalization.html> (1..=28;
//!   22 only adds element types): `x / ‖x‖_p` along `axis` for `p` 1 (`ReduceSum(|x|)`) or
//!   2 (`ReduceL2`); a lane whose norm is 0 gives 0 (the ONNX reference's `where`), not NaN.
//!   (The reference sums `x^p` without `|·|` for p = 1; Tessera and onnxruntime take the
//!   norm.)
//! * MeanVarianceNormalization:
//!   <https://onnx.ai/onnx/operators/onnx__MeanVarianceNormalization.html> (13..=28):
//!   ONNX's function body, `(x − E[x]) / (√(E[x²] − E[x]²) + 1e-9)` over `axes` (default
//!   `[0, 2, 3]`), with the variance clamped at 0 so that a constant lane whose rounded
//!   `E[x²] − E[x]²` is a hair below 0 gives 0 rather than NaN.
//! * Shrink: <https://onnx.ai/onnx/operators/onnx__Shrink.html> (9..=28):
//!   `x < −lambd ? x + bias : x > lambd ? x − bias : 0`; integer inputs are computed in f32
//!   and truncated back (as the reference's `astype`), exact for |x| ≤ 2^24.
//! * LRN: <https://onnx.ai/onnx/operators/onnx__LRN.html> (13..=28):
//!   `x / (bias + alpha/size · Σ x²)^beta`, the sum over the `size` channels from
//!   `c − ⌊(size−1)/2⌋` to `c + ⌈(size−1)/2⌉`: x² reshaped to `[N, 1, C, D1·…·Dk]` and
//!   average-pooled over `[size, 1]` windows with zero padding counted (the windowed sum / size).
use super::activation_extra::{konst, unary, Chain};
use super::elementwise::bin;
use super::{entry, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{
    BinaryOp, CastAttrs, PoolAttrs, PoolKind, ReduceAttrs, ReduceKind, ReshapeAttrs, UnaryOp,
};
use tessera_ir::{DType, Op};

pub(super) const OPS: &[OpEntry] = &[
    entry("LpNormalization", 1, lp_normalization),
    entry("MeanVarianceNormalization", 13, mean_variance_normalization),
    entry("Shrink", 9, shrink),
    entry("LRN", 13, lrn),
];

fn reduce(kind: ReduceKind, axes: Vec<usize>) -> Op {
    Op::Reduce(ReduceAttrs {
        kind,
        axes,
        keepdims: true,
    })
}

/// The dtype of input 0, which must be a float.
fn float_x(cx: &NodeCx) -> Result<DType, ImportError> {
    let d = cx.input(0)?.dtype;
    if !d.is_float() {
        return Err(cx.err(format!("expects a float input, got {d}")));
    }
    Ok(d)
}

fn lp_normalization(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let d = float_x(cx)?;
    let axis = cx.axis(cx.attr_int("axis", -1), cx.rank(0)?)?;
    let mut c = Chain::default();
    let norm = match cx.attr_int("p", 2) {
        1 => {
            let abs = c.push(unary(UnaryOp::Abs), vec![Ref::In(0)]);
            c.push(reduce(ReduceKind::Sum, vec![axis]), vec![abs])
        }
        2 => c.push(reduce(ReduceKind::L2, vec![axis]), vec![Ref::In(0)]),
        p => return Err(cx.err(format!("p must be 1 or 2, got {p}"))),
    };
    let q = c.push(bin(BinaryOp::Div), vec![Ref::In(0), norm.clone()]);
    let zero = c.push(bin(BinaryOp::Equal), vec![norm, konst(d, 0.0)]);
    c.push(Op::Where, vec![zero, konst(d, 0.0), q]);
    Ok(c.done())
}

fn mean_variance_normalization(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let d = float_x(cx)?;
    let rank = cx.rank(0)?;
    let axes = cx.attr_ints("axes").unwrap_or_else(|| vec![0, 2, 3]);
    let axes = cx.axes(&axes, rank)?;
    let mut c = Chain::default();
    let mean = c.push(reduce(ReduceKind::Mean, axes.clone()), vec![Ref::In(0)]);
    let mean_sq = c.push(bin(BinaryOp::Mul), vec![mean.clone(), mean.clone()]);
    let sq = c.push(bin(BinaryOp::Mul), vec![Ref::In(0), Ref::In(0)]);
    let sq_mean = c.push(reduce(ReduceKind::Mean, axes), vec![sq]);
    let var = c.push(bin(BinaryOp::Sub), vec![sq_mean, mean_sq]);
    let var = c.push(bin(BinaryOp::Max), vec![var, konst(d, 0.0)]);
    let std = c.push(unary(UnaryOp::Sqrt), vec![var]);
    let centred = c.push(bin(BinaryOp::Sub), vec![Ref::In(0), mean]);
    let den = c.push(bin(BinaryOp::Add), vec![std, konst(d, 1e-9)]);
    c.push(bin(BinaryOp::Div), vec![centred, den]);
    Ok(c.done())
}

fn shrink(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let d = cx.input(0)?.dtype;
    if d == DType::Bool {
        return Err(cx.err("expects a numeric input, got bool"));
    }
    let (bias, lambd) = (cx.attr_float("bias", 0.0), cx.attr_float("lambd", 0.5));
    let f = if d.is_float() { d } else { DType::F32 };
    let mut c = Chain::default();
    let x = if d.is_float() {
        Ref::In(0)
    } else {
        c.push(Op::Cast(CastAttrs { to: f }), vec![Ref::In(0)])
    };
    let k = |v: f32| konst(f, v.into());
    let below = c.push(bin(BinaryOp::Less), vec![x.clone(), k(-lambd)]);
    let above = c.push(bin(BinaryOp::Greater), vec![x.clone(), k(lambd)]);
    let up = c.push(bin(BinaryOp::Add), vec![x.clone(), k(bias)]);
    let down = c.push(bin(BinaryOp::Sub), vec![x, k(bias)]);
    let upper = c.push(Op::Where, vec![above, down, k(0.0)]);
    let y = c.push(Op::Where, vec![below, up, upper]);
    if !d.is_float() {
        c.push(Op::Cast(CastAttrs { to: d }), vec![y]);
    }
    Ok(c.done())
}

fn lrn(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let d = float_x(cx)?;
    let shape = cx.input(0)?.shape.to_vec();
    if shape.len() < 2 {
        return Err(cx.err(format!("expects [N, C, ...], got shape {shape:?}")));
    }
    let size = cx.attr_int("size", 0);
    if size < 1 {
        return Err(cx.err(format!("size must be at least 1, got {size}")));
    }
    let size = size as usize;
    let (alpha, beta, bias) = (
        cx.attr_float("alpha", 1e-4),
        cx.attr_float("beta", 0.75),
        cx.attr_float("bias", 1.0),
    );
    let (n, ch) = (shape[0], shape[1]);
    let rest: usize = shape[2..].iter().product();
    let mut c = Chain::default();
    let sq = c.push(bin(BinaryOp::Mul), vec![Ref::In(0), Ref::In(0)]);
    let planes = c.push(
        Op::Reshape(ReshapeAttrs {
            shape: vec![n, 1, ch, rest],
        }),
        vec![sq],
    );
    let avg = c.push(
        Op::Pool(PoolAttrs {
            kind: PoolKind::Average,
            kernel: vec![size, 1],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![(size - 1) / 2, 0, size / 2, 0],
            ceil_mode: false,
            count_include_pad: true,
        }),
        vec![planes],
    );
    let avg = c.push(Op::Reshape(ReshapeAttrs { shape }), vec![avg]);
    let scaled = c.push(bin(BinaryOp::Mul), vec![avg, konst(d, alpha.into())]);
    let base = c.push(bin(BinaryOp::Add), vec![scaled, konst(d, bias.into())]);
    let den = c.push(bin(BinaryOp::Pow), vec![base, konst(d, beta.into())]);
    c.push(bin(BinaryOp::Div), vec![Ref::In(0), den]);
    Ok(c.done())
}
