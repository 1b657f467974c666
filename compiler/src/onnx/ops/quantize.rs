//! Weight-only quantisation: DequantizeLinear of a constant becomes one quantised weight.
//!
//! * DequantizeLinear: <https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html> (10, 13,
//!   19, 21, 23; 24, 25 and 28 only add element types Tessera does not support: float8e8m0
//!   scales, int2/uint2 and float6 values). `x` must be an int8/uint8 initializer or
//!   constant and `x_scale` / `x_zero_point` initializers or constants. The output is a [`Weight`] stored as `x`'s bytes with a [`Quant`] whose
//!   scale and zero point keep their bytes and get `x`'s rank: a scalar (per-tensor) becomes
//!   all ones, a 1-D per-axis scale becomes 1 everywhere but `axis`, and a blocked scale
//!   (`block_size`, opset 21+) already has `x`'s rank (extent `x_extent / block_size` on
//!   `axis`). The output dtype is the scale's, or `output_dtype` (opset 23+). The runtime
//!   dequantises each rank's slice when it loads it. `x` computed at run time (an
//!   activation) is lowered to elementwise ops (`quantize_activation.rs`).
use super::{entry, InputView, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::{numel, DType, Quant, Weight, WeightData};

pub(super) const OPS: &[OpEntry] = &[entry("DequantizeLinear", 10, dequantize_linear)];

fn dequantize_linear(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let x = cx.input(0)?;
    // An activation, or a constant of a type not stored quantised (int32 biases of QDQ
    // models): elementwise ops, folded at import when the inputs are constants.
    if (x.source.is_none() && x.konst.is_none()) || !matches!(x.dtype, DType::I8 | DType::U8) {
        return super::quantize_activation::dequantize_activation(cx);
    }
    let scale = cx.input(1)?;
    let param_shape = param_shape(cx, x, scale)?;
    let dtype = match cx.attr_int("output_dtype", 0) {
        0 => scale.dtype,
        code => DType::from_onnx_code(code as i32)
            .ok_or_else(|| cx.err(format!("unknown output_dtype {code}")))?,
    };
    if !dtype.is_float() {
        return Err(cx.err(format!("output dtype {dtype} is not a float")));
    }
    let zero_point = match cx.opt_input(2) {
        Some(z) if z.shape != scale.shape && (numel(z.shape), numel(scale.shape)) != (1, 1) => {
            return Err(cx.err(format!(
                "zero point '{}' {:?} and scale '{}' {:?} differ in shape",
                z.name, z.shape, scale.name, scale.shape
            )))
        }
        Some(_) => Some(Box::new(constant(cx, 2, param_shape.clone())?)),
        None => None,
    };
    let mut w = constant(cx, 0, x.shape.to_vec())?;
    w.name = cx.node.output.first().cloned().unwrap_or_default();
    w.quant = Some(Quant {
        dtype,
        scale: Box::new(constant(cx, 1, param_shape)?),
        zero_point,
    });
    w.check_quant().map_err(|e| cx.err(e.to_string()))?;
    Ok(Lowered::Weight(w))
}

/// The shape of `x`'s rank the scale (and zero point) take: per-tensor, per-axis or blocked.
fn param_shape(cx: &NodeCx, x: &InputView, scale: &InputView) -> Result<Vec<usize>, ImportError> {
    let rank = x.shape.len();
    let block_size = cx.attr_int("block_size", 0);
    if numel(scale.shape) == 1 && block_size == 0 {
        return Ok(vec![1; rank]);
    }
    let axis = cx.axis(cx.attr_int("axis", 1), rank)?;
    let extent = x.shape[axis];
    if block_size <= 0 {
        if scale.shape != [extent] {
            return Err(cx.err(format!(
                "per-axis scale '{}' {:?} does not match x '{}' {:?} on axis {axis}",
                scale.name, scale.shape, x.name, x.shape
            )));
        }
        let mut shape = vec![1; rank];
        shape[axis] = extent;
        return Ok(shape);
    }
    let b = block_size as usize;
    if !extent.is_multiple_of(b) {
        return Err(cx.unsupported(format!(
            "block_size {b} does not divide x '{}' {:?} on axis {axis} (a partial last block)",
            x.name, x.shape
        )));
    }
    let mut want = x.shape.to_vec();
    want[axis] = extent / b;
    if scale.shape != want.as_slice() {
        return Err(cx.err(format!(
            "blocked scale '{}' {:?} should be {want:?} for x '{}' {:?}, block_size {b} on axis {axis}",
            scale.name, scale.shape, x.name, x.shape
        )));
    }
    Ok(want)
}

/// Input `i` (an initializer or a constant) as a weight of `shape` (the same elements).
pub(super) fn constant(cx: &NodeCx, i: usize, shape: Vec<usize>) -> Result<Weight, ImportError> {
    let v = cx.input(i)?;
    let mut w = match (v.source, v.konst) {
        (Some(w), _) => w.clone(),
        (None, Some(t)) => Weight::constant(v.name, t.clone()),
        (None, None) => {
            return Err(cx.err(format!(
                "input {i} ('{}') must be a constant (an initializer or a Constant output)",
                v.name
            )))
        }
    };
    if numel(&shape) != numel(&w.shape) {
        return Err(cx.err(format!(
            "'{}' {:?} cannot take shape {shape:?}",
            w.name, w.shape
        )));
    }
    if let WeightData::Inline { tensor } = &mut w.data {
        tensor.shape = shape.clone();
    }
    w.shape = shape;
    Ok(w)
}
