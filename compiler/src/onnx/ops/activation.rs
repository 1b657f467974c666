//! Activations and Clip.
//!
//! * Relu, Sigmoid, Tanh, Erf, Softplus: <https://onnx.ai/onnx/operators/onnx__Relu.html> etc.
//!   (opsets 13..=23)
//! * Gelu: <https://onnx.ai/onnx/operators/onnx__Gelu.html> (20..=23, `approximate` none/tanh)
//! * Clip: <https://onnx.ai/onnx/operators/onnx__Clip.html> (13..=23; min/max inputs must be
//!   constants; float and integer inputs, integer bounds within ±2^24)
//! * HardSigmoid: <https://onnx.ai/onnx/operators/onnx__HardSigmoid.html> (6..=28) and
//!   HardSwish: <https://onnx.ai/onnx/operators/onnx__HardSwish.html> (14..=28)
use super::elementwise::unary;
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::op::{ClipAttrs, GeluAttrs, HardSigmoidAttrs, UnaryOp};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("Relu", 1, |_| unary(UnaryOp::Relu)),
    entry("Sigmoid", 1, |_| unary(UnaryOp::Sigmoid)),
    entry("Tanh", 1, |_| unary(UnaryOp::Tanh)),
    entry("Erf", 9, |_| unary(UnaryOp::Erf)),
    entry("Softplus", 1, |_| unary(UnaryOp::Softplus)),
    entry("Gelu", 20, gelu),
    entry("Clip", 11, clip),
    entry("HardSigmoid", 6, |cx| {
        hard_sigmoid(
            cx.attr_float("alpha", 0.2),
            cx.attr_float("beta", 0.5),
            false,
        )
    }),
    entry("HardSwish", 14, |_| hard_sigmoid(1.0 / 6.0, 0.5, true)),
];

fn hard_sigmoid(alpha: f32, beta: f32, swish: bool) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(
        Op::HardSigmoid(HardSigmoidAttrs { alpha, beta, swish }),
        &[0],
    ))
}

fn gelu(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let tanh_approximation = match cx.attr_str("approximate").as_deref() {
        None | Some("none") => false,
        Some("tanh") => true,
        Some(other) => return Err(cx.err(format!("unknown approximate='{other}'"))),
    };
    Ok(Lowered::op(
        Op::Gelu(GeluAttrs { tanh_approximation }),
        &[0],
    ))
}

fn clip(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let integer = cx.input(0)?.dtype.is_int();
    let bound = |i: usize| -> Result<Option<f32>, ImportError> {
        match cx.opt_input(i) {
            None => Ok(None),
            Some(_) => {
                let t = cx.const_input(i)?;
                match t.to_f64_vec().as_slice() {
                    // Integer inputs are clipped in i64 with the bound read back from f32:
                    // exact only for |v| <= 2^24.
                    [v] if integer && f64::from(*v as f32) != *v => Err(cx.err(format!(
                        "input {i}: integer bound {v} is not exactly representable as f32 \
                         (|bound| must be <= 2^24)"
                    ))),
                    [v] => Ok(Some(*v as f32)),
                    _ => Err(cx.err(format!(
                        "input {i} must be a scalar, got shape {:?}",
                        t.shape
                    ))),
                }
            }
        }
    };
    Ok(Lowered::op(
        Op::Clip(ClipAttrs {
            min: bound(1)?,
            max: bound(2)?,
        }),
        &[0],
    ))
}
