//! Quantisation of activations, lowered at import into elementwise IR ops and one float
//! MatMul (the forms onnxruntime's own quantisation tools write: `quantize_static`'s
//! QuantizeLinear/DequantizeLinear pairs and `quantize_dynamic`'s DynamicQuantizeLinear +
//! MatMulInteger):
//!
//! * QuantizeLinear: <https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html> (10, 13,
//!   19, 21, 23; 24, 25 only add element types Tessera does not support): `y =
//!   saturate(round(x / y_scale) + y_zero_point)`, ties to even, per tensor or per axis;
//!   uint8, int8 and int16 outputs. Blocked quantisation of an activation (`block_size`) and
//!   float8/4-bit outputs are refused.
//! * DequantizeLinear of an activation (same spec page as the weight form in `quantize.rs`):
//!   `y = (x − x_zero_point) · x_scale`, per tensor or per axis.
//! * DynamicQuantizeLinear: <https://onnx.ai/onnx/operators/onnx__DynamicQuantizeLinear.html>
//!   (11..=28): the range of `x` widened to include 0 gives `y_scale = (max − min) / 255` (1
//!   when the range is empty, as onnxruntime does), `y_zero_point = round(clamp(−min /
//!   y_scale, 0, 255))` and `y = clamp(round(x / y_scale) + y_zero_point, 0, 255)` as
//!   uint8. The minimum and maximum are reductions over every axis, so a split input is
//!   gathered (or its producer replicated) by the partitioner as for any full reduction.
//! * MatMulInteger: <https://onnx.ai/onnx/operators/onnx__MatMulInteger.html> (10..=28):
//!   `(A − a_zero_point) · (B − b_zero_point)` as int32. Lowered to a float MatMul of the
//!   zero-point-shifted operands and a Cast to int32; the products and sums of 8-bit
//!   integers are exact in f32 up to 2^24 and rounded to f32 above (a relative error of at
//!   most 6e-8). A constant B becomes a quantised weight leaf (stored at one byte per
//!   element, its zero point kept, scale 1), which splits like a float weight.
use super::activation_extra::{konst, unary, Chain};
use super::elementwise::bin;
use super::{InputView, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, CastAttrs, ClipAttrs, ReduceAttrs, ReduceKind, ReshapeAttrs};
use tessera_ir::op::{MatMulAttrs, UnaryOp};
use tessera_ir::spec::quant_range;
use tessera_ir::{numel, DType, Op, Quant, Tensor, Weight};

pub(super) const OPS: &[OpEntry] = &[
    super::entry("QuantizeLinear", 10, quantize_linear),
    super::entry("DynamicQuantizeLinear", 11, dynamic_quantize_linear),
    super::entry("MatMulInteger", 10, matmul_integer),
];

fn cast(to: DType) -> Op {
    Op::Cast(CastAttrs { to })
}

fn clip(lo: f64, hi: f64) -> Op {
    Op::Clip(ClipAttrs {
        min: Some(lo as f32),
        max: Some(hi as f32),
    })
}

/// `r` as f32 (no step when it already is).
fn as_f32(c: &mut Chain, r: Ref, d: DType) -> Ref {
    if d == DType::F32 {
        r
    } else {
        c.push(cast(DType::F32), vec![r])
    }
}

/// Input `i` (a scale or zero point of `x`) as f32, shaped to broadcast against `x`: a
/// scalar or one-element tensor as is, a 1-D tensor of `x`'s extent on `axis` reshaped to
/// `[1, .., extent, .., 1]` (per-axis quantisation).
///
/// A parameter known at import becomes an f32 constant of that shape: no Cast of an 8-bit
/// constant is left in the graph (such a Cast stays a node, as the start of a weight-only
/// dequantisation, and one computed value read by every layer would hide the layers).
fn param(c: &mut Chain, cx: &NodeCx, i: usize, x: &InputView) -> Result<Ref, ImportError> {
    let p = cx.input(i)?;
    let shape = if numel(p.shape) == 1 && p.shape.len() <= 1 {
        p.shape.to_vec()
    } else if p.shape.len() == 1 {
        let axis = cx.axis(cx.attr_int("axis", 1), x.shape.len())?;
        if p.shape[0] != x.shape[axis] {
            return Err(cx.err(format!(
                "per-axis '{}' {:?} does not match '{}' {:?} on axis {axis}",
                p.name, p.shape, x.name, x.shape
            )));
        }
        let mut shape = vec![1; x.shape.len()];
        shape[axis] = p.shape[0];
        shape
    } else {
        return Err(cx.unsupported(format!(
            "'{}' {:?}: only per-tensor and per-axis parameters of an activation",
            p.name, p.shape
        )));
    };
    if let Some(t) = p.konst {
        let v = t.to_f64_vec().into_iter().map(|v| v as f32).collect();
        return Ok(Ref::Const(Tensor::f32(shape, v)));
    }
    let r = if shape.as_slice() == p.shape {
        Ref::In(i)
    } else {
        c.push(Op::Reshape(ReshapeAttrs { shape }), vec![Ref::In(i)])
    };
    Ok(as_f32(c, r, p.dtype))
}

/// QuantizeLinear: `Cast(Clip(Round(x / scale) + zero_point, qmin, qmax))`.
fn quantize_linear(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    let scale = cx.input(1)?;
    if !scale.dtype.is_float() || !(x.dtype.is_float() || x.dtype == DType::I32) {
        return Err(cx.err(format!(
            "x '{}' is {} and y_scale '{}' {}: expected a float (or int32) x and a float scale",
            x.name, x.dtype, scale.name, scale.dtype
        )));
    }
    if cx.attr_int("block_size", 0) > 0 {
        return Err(cx.unsupported("blocked quantisation (block_size) of an activation"));
    }
    let zp = cx.opt_input(2);
    let out = match (cx.attr_int("output_dtype", 0), zp) {
        (0, Some(z)) => z.dtype,
        (0, None) => DType::U8,
        (code, z) => {
            let d = DType::from_onnx_code(code as i32)
                .ok_or_else(|| cx.err(format!("unknown output_dtype {code}")))?;
            if z.is_some_and(|z| z.dtype != d) {
                return Err(cx.err(format!("output_dtype {d} differs from the zero point's")));
            }
            d
        }
    };
    let (lo, hi) = quant_range(out)
        .ok_or_else(|| cx.unsupported(format!("output type {out}: only uint8, int8 and int16")))?;
    let mut c = Chain::default();
    let xf = as_f32(&mut c, Ref::In(0), x.dtype);
    let s = param(&mut c, cx, 1, x)?;
    let q = c.push(bin(BinaryOp::Div), vec![xf, s]);
    let mut r = c.push(unary(UnaryOp::Round), vec![q]);
    if zp.is_some() {
        let z = param(&mut c, cx, 2, x)?;
        r = c.push(bin(BinaryOp::Add), vec![r, z]);
    }
    let clipped = c.push(clip(lo.into(), hi.into()), vec![r]);
    c.push(cast(out), vec![clipped]);
    Ok(c.done())
}

/// DequantizeLinear of an activation: `(Cast(x) − zero_point) · scale`.
pub(super) fn dequantize_activation(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    let scale = cx.input(1)?;
    if quant_range(x.dtype).is_none() && x.dtype != DType::I32 {
        return Err(cx.unsupported(format!(
            "x '{}' is {}: only int8, uint8, int16 and int32 activations",
            x.name, x.dtype
        )));
    }
    if cx.attr_int("block_size", 0) > 0 {
        return Err(cx.unsupported("blocked dequantisation (block_size) of an activation"));
    }
    let out = match cx.attr_int("output_dtype", 0) {
        0 => scale.dtype,
        code => DType::from_onnx_code(code as i32)
            .ok_or_else(|| cx.err(format!("unknown output_dtype {code}")))?,
    };
    if !out.is_float() || !scale.dtype.is_float() {
        return Err(cx.err(format!(
            "scale '{}' is {} and the output {out}: both must be floats",
            scale.name, scale.dtype
        )));
    }
    let mut c = Chain::default();
    let mut v = c.push(cast(DType::F32), vec![Ref::In(0)]);
    if cx.opt_input(2).is_some() {
        let z = param(&mut c, cx, 2, x)?;
        v = c.push(bin(BinaryOp::Sub), vec![v, z]);
    }
    let s = param(&mut c, cx, 1, x)?;
    let y = c.push(bin(BinaryOp::Mul), vec![v, s]);
    if out != DType::F32 {
        c.push(cast(out), vec![y]);
    }
    Ok(c.done())
}

/// DynamicQuantizeLinear: outputs `y` (uint8), `y_scale` and `y_zero_point` (uint8).
fn dynamic_quantize_linear(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    if x.dtype != DType::F32 {
        return Err(cx.err(format!("x '{}' is {}, expected float", x.name, x.dtype)));
    }
    let all: Vec<usize> = (0..x.shape.len()).collect();
    let reduce = |kind| {
        Op::Reduce(ReduceAttrs {
            kind,
            axes: all.clone(),
            keepdims: false,
        })
    };
    let f = DType::F32;
    let mut c = Chain::default();
    let mx = c.push(reduce(ReduceKind::Max), vec![Ref::In(0)]);
    let mn = c.push(reduce(ReduceKind::Min), vec![Ref::In(0)]);
    let hi = c.push(bin(BinaryOp::Max), vec![mx, konst(f, 0.0)]);
    let lo = c.push(bin(BinaryOp::Min), vec![mn, konst(f, 0.0)]);
    let range = c.push(bin(BinaryOp::Sub), vec![hi, lo.clone()]);
    let empty = c.push(bin(BinaryOp::Equal), vec![range.clone(), konst(f, 0.0)]);
    let range = c.push(Op::Where, vec![empty, konst(f, 1.0), range]);
    let scale = c.push(bin(BinaryOp::Div), vec![range, konst(f, 255.0)]);
    let lo_q = c.push(bin(BinaryOp::Div), vec![lo, scale.clone()]);
    let zp_f = c.push(unary(UnaryOp::Neg), vec![lo_q]);
    let zp_c = c.push(clip(0.0, 255.0), vec![zp_f]);
    let zp = c.push(unary(UnaryOp::Round), vec![zp_c]);
    let q = c.push(bin(BinaryOp::Div), vec![Ref::In(0), scale.clone()]);
    let q = c.push(unary(UnaryOp::Round), vec![q]);
    let q = c.push(bin(BinaryOp::Add), vec![q, zp.clone()]);
    let q = c.push(clip(0.0, 255.0), vec![q]);
    let y = c.push(cast(DType::U8), vec![q]);
    let zp_u8 = c.push(cast(DType::U8), vec![zp]);
    c.picked(&[y, scale, zp_u8]).map_err(|e| cx.err(e))
}

/// MatMulInteger: `Cast(MatMul(A − a_zero_point, B − b_zero_point), int32)`, a constant B
/// read as a quantised weight.
fn matmul_integer(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    for v in [a, b] {
        if !matches!(v.dtype, DType::I8 | DType::U8) {
            return Err(cx.err(format!(
                "'{}' is {}, expected int8 or uint8",
                v.name, v.dtype
            )));
        }
    }
    if a.shape.len() < 2 || b.shape.len() < 2 {
        return Err(cx.unsupported(format!(
            "A {:?} and B {:?}: 1-D operands of MatMulInteger",
            a.shape, b.shape
        )));
    }
    let mut c = Chain::default();
    let mut af = c.push(cast(DType::F32), vec![Ref::In(0)]);
    if let Some(z) = cx.opt_input(2) {
        let zr = zero_point_ref(&mut c, cx, 2, z, a.shape[a.shape.len() - 2], true)?;
        af = c.push(bin(BinaryOp::Sub), vec![af, zr]);
    }
    let bf = match quantised_b(cx, b)? {
        Some(w) => Ref::Weight(Box::new(w)),
        None => {
            let mut bf = c.push(cast(DType::F32), vec![Ref::In(1)]);
            if let Some(z) = cx.opt_input(3) {
                let zr = zero_point_ref(&mut c, cx, 3, z, b.shape[b.shape.len() - 1], false)?;
                bf = c.push(bin(BinaryOp::Sub), vec![bf, zr]);
            }
            bf
        }
    };
    let mm = c.push(Op::MatMul(MatMulAttrs {}), vec![af, bf]);
    c.push(cast(DType::I32), vec![mm]);
    Ok(c.done())
}

/// A zero point of MatMulInteger as an f32 operand: a scalar, or a vector of `extent`
/// elements, per row of A (`per_row`, reshaped to a column) or per column of B.
fn zero_point_ref(
    c: &mut Chain,
    cx: &NodeCx,
    i: usize,
    z: &InputView,
    extent: usize,
    per_row: bool,
) -> Result<Ref, ImportError> {
    let n = numel(z.shape);
    let r = if n == 1 {
        Ref::In(i)
    } else if z.shape.len() == 1 && n == extent {
        let shape = if per_row { vec![n, 1] } else { vec![n] };
        c.push(Op::Reshape(ReshapeAttrs { shape }), vec![Ref::In(i)])
    } else {
        return Err(cx.unsupported(format!(
            "zero point '{}' {:?}: only a scalar or a vector of {extent}",
            z.name, z.shape
        )));
    };
    Ok(c.push(cast(DType::F32), vec![r]))
}

/// A constant B (an initializer or a folded constant) as a weight stored at its 8 bits,
/// dequantised with scale 1 and B's zero point (input 3); `None` when B is computed at
/// run time or its zero point is.
fn quantised_b(cx: &NodeCx, b: &InputView) -> Result<Option<Weight>, ImportError> {
    let mut w = match (b.source, b.konst) {
        (Some(w), _) => w.clone(),
        (None, Some(t)) => Weight::constant(b.name, t.clone()),
        (None, None) => return Ok(None),
    };
    if w.quant.is_some() || w.perm.is_some() {
        return Ok(None);
    }
    let rank = b.shape.len();
    let n = b.shape[rank - 1];
    let zero_point = match cx.opt_input(3) {
        None => None,
        Some(z) => {
            let Some(t) = z.konst else { return Ok(None) };
            if z.dtype != b.dtype {
                return Err(cx.err(format!(
                    "zero point '{}' is {}, B '{}' {}",
                    z.name, z.dtype, b.name, b.dtype
                )));
            }
            let mut shape = vec![1; rank];
            match numel(z.shape) {
                1 => {}
                e if e == n && z.shape.len() == 1 => shape[rank - 1] = n,
                _ => {
                    return Err(cx.unsupported(format!(
                        "zero point '{}' {:?} of B {:?}: only a scalar or one per column",
                        z.name, z.shape, b.shape
                    )))
                }
            }
            let t = Tensor {
                shape: shape.clone(),
                ..t.clone()
            };
            Some(Box::new(Weight::constant(
                format!("{}/zero_point", b.name),
                t,
            )))
        }
    };
    let ones = Tensor::f32(vec![1; rank], vec![1.0]);
    w.quant = Some(Quant {
        dtype: DType::F32,
        scale: Box::new(Weight::constant(format!("{}/scale", b.name), ones)),
        zero_point,
    });
    w.check_quant().map_err(|e| cx.err(e.to_string()))?;
    Ok(Some(w))
}
