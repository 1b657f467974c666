//! Fused CPU kernels: op chains of transformer blocks that a CPU device runs as one kernel
//! (the patterns are found in a rank's program by `crate::exec::fuse`).
//!
//! Each kernel does the arithmetic of the chain it replaces, in the same order and with the
//! same helpers (`erf`, `softmax_row`, `layer_norm_block`, the same GEMM). The epilogue and
//! Add+LayerNorm kernels match the unfused ops bit for bit (tested); the attention's two
//! GEMMs read strided views of q, k and v, whose blocking may round differently in the last
//! bit (tested within 1e-6; identical on MiniLM). What changes is that the intermediates are
//! never materialised: attention scores live in one `Sq × Sk` scratch
//! per head instead of a `[B, H, Sq, Sk]` tensor, the heads are read from and written to
//! the projections through strides instead of Reshape + Transpose copies, and bias, GELU and
//! residual adds run in the pass that produces or consumes their operand.
use super::conv_epilogue::ConvActivation;
use super::{describe, make, KResult, KernelError};
use add_norm::add_layer_norm;
use attention::attention;
use conv::conv_epilogue;
use matmul::matmul_epilogue;
use tessera_ir::op::{ConvAttrs, GeluAttrs, NormAttrs};
use tessera_ir::{DType, Tensor, TensorData};

mod add_norm;
mod attention;
mod attention_extent;
mod attention_mask;
mod attention_products;
mod conv;
mod elementwise;
mod elementwise_runner;
mod matmul;
mod quantize;
mod rotary;
pub use attention::{
    AttentionMask, AttentionScale, AttentionShape, HeadLayout, ScoreTerm, SoftmaxRows,
};
pub use conv::HeldConvWeight;
pub(crate) use elementwise::elementwise;
pub use elementwise::{ElementwiseProgram, EwInstr};
#[cfg(test)]
pub(crate) use quantize::quantize as quantize_value;
pub(crate) use quantize::{dequantize_op, quantize_op};

/// The integer GEMM of [`FusedOp::QuantMatMul`]: the packed weight and the epilogue.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatMulOp {
    /// The activation's quantised type (uint8 or int8) when the kernel quantises a float
    /// `x`; `None` when its input is the integer activation itself (inputs q, sd, zd, then
    /// bias: a Quantize on another rank, its result all-gathered as bytes).
    pub to: Option<DType>,
    /// The weight.
    pub weight: QuantWeight,
    /// A bias vector is added.
    pub bias: bool,
    /// A GELU of this form follows.
    pub gelu: Option<GeluAttrs>,
}

/// Where [`FusedOp::QuantMatMul`]'s weight comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantWeight {
    /// Packed from its stored integers when the program was prepared.
    Packed(std::sync::Arc<crate::PackedQWeight>),
    /// An input holding the dequantised weight `[K, N]` (gathered from the ranks that
    /// loaded it), packed on every call from these per-column parameters
    /// ([`crate::PackedQWeight::from_dequantised`]).
    Dequantised {
        /// The stored type (int8 or uint8).
        stored: DType,
        /// Per column: the scale.
        scale: std::sync::Arc<[f32]>,
        /// Per column: the zero point.
        zero: std::sync::Arc<[i64]>,
    },
}

/// A fused op chain (inputs in the order listed per variant).
#[derive(Debug, Clone, PartialEq)]
pub enum FusedOp {
    /// `MatMul(A, B)`, then `+ bias` over the last axis when `bias` (inputs A, B, bias),
    /// then the canonical GELU op (erf or tanh form, the same arithmetic as the `Gelu`
    /// kernel) when `gelu` is set.
    MatMulEpilogue {
        /// A bias vector is added.
        bias: bool,
        /// A GELU of this form follows.
        gelu: Option<GeluAttrs>,
        /// B, packed when the plan was loaded (then not an input: A, then bias).
        held: Option<std::sync::Arc<crate::PackedMatMulWeight>>,
    },
    /// `MatMul(Dequantize(Quantize(x, sq, zq), sd, zd), W)` with a quantised weight `W`
    /// packed in the op, then `+ bias` and a GELU as [`FusedOp::MatMulEpilogue`] (inputs x,
    /// sq, zq, sd, zd, then bias; the scales and zero points have one element each), as an
    /// integer GEMM ([`crate::quant_matmul`]); or `MatMul(Dequantize(q, sd, zd), W)` of an
    /// integer `q` (inputs q, sd, zd, then bias; [`crate::dequant_matmul_epilogue`]). A
    /// [`QuantWeight::Dequantised`] weight is one more input, after zd.
    QuantMatMul(QuantMatMulOp),
    /// `LayerNorm(a + b)` over the last axis (inputs a, b, scale, bias when `has_bias`), or
    /// with `pre_bias` `LayerNorm((a + c) + b)` with c a vector over the last axis (inputs a,
    /// c, b, scale, bias): the bias of a row-parallel layer added after its all-reduce, then
    /// the residual. With `keep_sum`, the sum is a second output ([`eval_fused_outputs`]):
    /// a pre-norm transformer's residual stream, which the next residual add reads too.
    /// With `rms`, an RMSNorm (inputs as above, no bias) in place of the LayerNorm.
    AddLayerNorm {
        /// The norm's attributes.
        attrs: NormAttrs,
        /// The norm is an RMSNorm.
        rms: bool,
        /// The LayerNorm has a bias input.
        has_bias: bool,
        /// A bias vector is added to `a` first.
        pre_bias: bool,
        /// The sum is a second output.
        keep_sum: bool,
    },
    /// Multi-head scaled dot-product attention, `Softmax(terms(mask(scale(Q·Kᵀ)))) · V`
    /// (inputs q, k, v, the scale's inputs ([`AttentionScale`]), the mask's
    /// ([`AttentionMask`]), the score terms' ([`ScoreTerm`]), then the NaN fill under
    /// [`SoftmaxRows::NanToFill`]), where Q = `q` viewed as `[B, Sq, H, D]` with the head
    /// axis moved in front of the sequence axis (or `q` as `[B, H, Sq, D]`, [`HeadLayout`]),
    /// K and V likewise from `k`, `v`.
    Attention(AttentionShape),
    /// The rotary position embedding `x·cos + rotate_half(x)·sin` over the last axis of
    /// `x`, `rotate_half(x) = concat(-x[.., h..], x[.., ..h])` (inputs x, cos, sin; cos and
    /// sin broadcast to x with whole rows), or `concat(x[.., h..], x[.., ..h])` when not
    /// `negate` (the opset-23 exports fold the sign into `sin`).
    Rotary {
        /// The upper half is negated.
        negate: bool,
    },
    /// A tree of elementwise ops evaluated in one pass (inputs as the program's `Load`,
    /// `LoadCast` and `Where` instructions index them).
    Elementwise(ElementwiseProgram),
    /// `Conv(X, W, B)`, then `· S` and `+ T` (one value per output channel, an unfolded
    /// inference BatchNormalization) when `scale` / `shift`, then `+ R` (a tensor of the
    /// Conv output's shape) when `residual`, then the activation when `act` (inputs X, W,
    /// then B, S, T, R as present; S and T have the Conv output's channel count of
    /// elements); the epilogue runs on each block of Conv output as soon as it is final.
    /// With `held` weights, W is not an input: the Conv reads the weights prepared when the
    /// plan was loaded ([`HeldConvWeight`]).
    ConvEpilogue {
        /// The Conv's attributes.
        attrs: ConvAttrs,
        /// W prepared when the plan was loaded (then absent from the inputs).
        held: Option<HeldConvWeight>,
        /// The Conv has a bias input.
        bias: bool,
        /// A per-channel factor follows.
        scale: bool,
        /// A per-channel addend follows (after the factor).
        shift: bool,
        /// A residual tensor is added.
        residual: bool,
        /// The activation.
        act: Option<ConvActivation>,
    },
}

impl FusedOp {
    /// Short name (profiles, error messages).
    pub fn name(&self) -> &'static str {
        match self {
            FusedOp::MatMulEpilogue { gelu: Some(_), .. } => "fused MatMul+Bias+Gelu",
            FusedOp::MatMulEpilogue { bias: true, .. } => "fused MatMul+Bias",
            FusedOp::MatMulEpilogue { .. } => "packed MatMul",
            FusedOp::QuantMatMul(q) => match (q.bias, &q.gelu) {
                (_, Some(_)) => "fused QuantMatMul+Bias+Gelu",
                (true, None) => "fused QuantMatMul+Bias",
                (false, None) => "fused QuantMatMul",
            },
            FusedOp::AddLayerNorm { rms: false, .. } => "fused Add+LayerNorm",
            FusedOp::AddLayerNorm { rms: true, .. } => "fused Add+RmsNorm",
            FusedOp::Attention(_) => "fused Attention",
            FusedOp::Rotary { .. } => "fused Rotary",
            FusedOp::Elementwise(_) => "fused Elementwise",
            FusedOp::ConvEpilogue {
                scale,
                shift,
                residual,
                act,
                ..
            } => match (*scale || *shift, *residual, act.is_some()) {
                (false, true, true) => "fused Conv+Add+Act",
                (false, true, false) => "fused Conv+Add",
                (false, false, true) => "fused Conv+Act",
                (false, false, false) => "prepared Conv",
                (true, true, true) => "fused Conv+Affine+Add+Act",
                (true, true, false) => "fused Conv+Affine+Add",
                (true, false, true) => "fused Conv+Affine+Act",
                (true, false, false) => "fused Conv+Affine",
            },
        }
    }
}

/// Evaluates a fused op on host tensors: its first output (the only one but for
/// [`FusedOp::AddLayerNorm`] with `keep_sum`; [`eval_fused_outputs`] gives every output).
pub fn eval_fused(op: &FusedOp, inputs: &[&Tensor]) -> Result<Tensor, KernelError> {
    let mut outs = eval_fused_outputs(op, inputs)?;
    // Every fused op has at least one output.
    Ok(outs.swap_remove(0))
}

/// Evaluates a fused op on host tensors: every output, in order.
pub fn eval_fused_outputs(op: &FusedOp, inputs: &[&Tensor]) -> Result<Vec<Tensor>, KernelError> {
    let one = |t: Tensor| vec![t];
    let r = match op {
        FusedOp::MatMulEpilogue { bias, gelu, held } => matmul_epilogue(
            *bias,
            gelu.as_ref().map(|g| g.tanh_approximation),
            held.as_deref(),
            inputs,
        )
        .map(one),
        FusedOp::QuantMatMul(q) => quant_matmul_op(q, inputs).map(one),
        FusedOp::AddLayerNorm {
            attrs,
            rms,
            has_bias,
            pre_bias,
            keep_sum,
        } => add_layer_norm(attrs, *rms, *has_bias, *pre_bias, *keep_sum, inputs),
        FusedOp::Attention(a) => attention(a, inputs).map(one),
        FusedOp::Rotary { negate } => rotary::rotary(*negate, inputs).map(one),
        FusedOp::Elementwise(p) => elementwise::elementwise(p, inputs).map(one),
        FusedOp::ConvEpilogue {
            attrs,
            held,
            bias,
            scale,
            shift,
            residual,
            act,
        } => conv_epilogue(
            attrs,
            held.as_ref(),
            [*bias, *scale, *shift, *residual],
            *act,
            inputs,
        )
        .map(one),
    };
    r.map_err(|msg| KernelError {
        op: op.name().into(),
        msg,
    })
}

/// The f32 elements of a tensor whose dtype is exactly f32 (half types round on every op,
/// which the fused kernels do not model).
fn f32s<'a>(t: &'a Tensor, what: &str) -> KResult<&'a [f32]> {
    match (&t.data, t.dtype) {
        (TensorData::F32(v), DType::F32) => Ok(v),
        _ => Err(format!("{what} must be f32, got {}", describe(t))),
    }
}

/// The single element of a one-element f32 tensor.
fn scalar(t: &Tensor, what: &str) -> KResult<f32> {
    match f32s(t, what)? {
        [c] => Ok(*c),
        _ => Err(format!("{what} must have one element, got {}", describe(t))),
    }
}

fn expect_inputs(inputs: &[&Tensor], n: usize) -> KResult<()> {
    if inputs.len() != n {
        return Err(format!("expected {n} inputs, got {}", inputs.len()));
    }
    Ok(())
}

fn quant_matmul_op(q: &QuantMatMulOp, inputs: &[&Tensor]) -> KResult<Tensor> {
    let params = if q.to.is_some() { 5 } else { 3 };
    let from_input = matches!(q.weight, QuantWeight::Dequantised { .. });
    expect_inputs(inputs, params + from_input as usize + q.bias as usize)?;
    let bias = match q.bias {
        true => Some(f32s(inputs[params + from_input as usize], "bias")?),
        false => None,
    };
    let packed;
    let weight = match &q.weight {
        QuantWeight::Packed(w) => &**w,
        QuantWeight::Dequantised {
            stored,
            scale,
            zero,
        } => {
            let w = inputs[params];
            let [k, n] = w.shape[..] else {
                return Err(format!("weight {} is not a matrix", describe(w)));
            };
            packed = crate::PackedQWeight::from_dequantised(
                k,
                n,
                f32s(w, "weight")?,
                *stored,
                scale,
                zero,
            )?;
            &packed
        }
    };
    let gelu = q.gelu.as_ref().map(|g| g.tanh_approximation);
    let (sd, zd) = (inputs[params - 2], inputs[params - 1]);
    let (sd, zd) = (
        scalar(sd, "Dequantize scale")?,
        scalar(zd, "Dequantize zero point")?,
    );
    match q.to {
        Some(to) => {
            let act = crate::ActQuant {
                to,
                sq: scalar(inputs[1], "Quantize scale")?,
                zq: scalar(inputs[2], "Quantize zero point")?,
                sd,
                zd,
            };
            crate::quant_matmul(inputs[0], act, weight, bias, gelu)
        }
        None => crate::dequant_matmul_epilogue(inputs[0], sd, zd, weight, bias, gelu),
    }
}

/// Helpers shared by the fused kernels' tests.
#[cfg(test)]
mod testing {
    use crate::eval;
    use tessera_ir::op::{BinaryAttrs, BinaryOp};
    use tessera_ir::{Op, Tensor};

    /// Deterministic pseudo-random f32 tensor.
    pub(super) fn rand(shape: Vec<usize>, seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::f32(shape, v)
    }

    pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    pub(super) fn run(op: Op, ins: &[&Tensor]) -> Tensor {
        eval(&op, ins).unwrap().remove(0)
    }

    pub(super) fn bin(kind: BinaryOp, a: &Tensor, b: &Tensor) -> Tensor {
        run(Op::Binary(BinaryAttrs { kind }), &[a, b])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use tessera_ir::op::*;
    use tessera_ir::Op;

    const ERF: GeluAttrs = GeluAttrs {
        tanh_approximation: false,
    };
    const TANH: GeluAttrs = GeluAttrs {
        tanh_approximation: true,
    };

    /// The canonical GELU op of the erf form, as the unfused plan runs it.
    fn gelu_op(x: &Tensor) -> Tensor {
        run(Op::Gelu(ERF), &[x])
    }

    #[test]
    fn matmul_bias_gelu_equals_the_unfused_ops_bitwise() {
        let a = rand(vec![2, 5, 8], 1);
        let w = rand(vec![8, 12], 2);
        let bias = rand(vec![12], 3);
        let mm = run(Op::MatMul(MatMulAttrs {}), &[&a, &w]);
        let x = bin(BinaryOp::Add, &bias, &mm);
        for form in [ERF, TANH] {
            let want = run(Op::Gelu(form.clone()), &[&x]);
            let op = FusedOp::MatMulEpilogue {
                bias: true,
                gelu: Some(form.clone()),
                held: None,
            };
            let got = eval_fused(&op, &[&a, &w, &bias]).unwrap();
            assert_eq!(got.shape, vec![2, 5, 12]);
            assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap(), "{form:?}");
        }
        let only_bias = FusedOp::MatMulEpilogue {
            bias: true,
            gelu: None,
            held: None,
        };
        let got = eval_fused(&only_bias, &[&a, &w, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), x.as_f32().unwrap());
        // A bias that is not one value per output column is refused, not broadcast wrongly.
        let err = eval_fused(&only_bias, &[&a, &w, &rand(vec![5, 12], 4)]).unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
        // B packed when the plan is loaded (not an input): the same product within
        // rounding (its sums are blocked differently), then the same epilogue.
        if crate::lanes16::lanes_isa().is_some() {
            let packed = crate::PackedMatMulWeight::pack(8, 12, w.as_f32().unwrap()).unwrap();
            let held = FusedOp::MatMulEpilogue {
                bias: true,
                gelu: None,
                held: Some(std::sync::Arc::new(packed)),
            };
            let got = eval_fused(&held, &[&a, &bias]).unwrap();
            assert_eq!(got.shape, vec![2, 5, 12]);
            for (g, w) in got.as_f32().unwrap().iter().zip(x.as_f32().unwrap()) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} against {w}");
            }
            let err = eval_fused(&held, &[&rand(vec![2, 5, 7], 5), &bias]).unwrap_err();
            assert!(err.to_string().contains("cannot multiply"), "{err}");
        }
    }

    /// Large |x| through the fused epilogue: erf(x/√2) is exactly ±1, so GELU is exactly 0
    /// for large negative x and x for large positive x, bit for bit as the Gelu op.
    #[test]
    fn matmul_gelu_is_exact_at_large_inputs() {
        let xs = vec![-10.0f32, -30.0, -1e4, 10.0, 30.0, 1e4];
        let a = Tensor::f32(vec![6, 1], xs);
        let w = Tensor::f32(vec![1, 1], vec![1.0]);
        let x = run(Op::MatMul(MatMulAttrs {}), &[&a, &w]);
        let want = gelu_op(&x);
        let op = FusedOp::MatMulEpilogue {
            bias: false,
            gelu: Some(ERF),
            held: None,
        };
        let got = eval_fused(&op, &[&a, &w]).unwrap();
        let bits = |t: &Tensor| {
            t.as_f32()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(got.as_f32().unwrap(), &[0.0, 0.0, 0.0, 10.0, 30.0, 1e4]);
    }
}
