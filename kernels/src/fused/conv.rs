//! The fused Conv ([`super::FusedOp::ConvEpilogue`]): the weights it may hold and its
//! evaluation (the Conv, then its epilogue on each finished block of output).
use super::{describe, expect_inputs, f32s};
use crate::conv::{conv_fused, ConvWeight};
use crate::conv_epilogue::{ConvActivation, Epilogue};
use crate::KResult;
use tessera_ir::op::ConvAttrs;
use tessera_ir::Tensor;

/// Weights a fused Conv holds, prepared when the plan was loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldConvWeight {
    /// Packed for the direct kernel (whose sums round in another order than the im2col
    /// GEMM's).
    Packed(std::sync::Arc<crate::PackedConvWeight>),
    /// Blocked for the grouped kernel (the op's attributes may be trimmed ones).
    Grouped(std::sync::Arc<crate::PackedGroupedWeight>),
    /// Plain `[M, C/g, kernel..]` f32 weights: the live taps of a Conv whose end taps read
    /// only padding ([`crate::trim_dead_taps`]; the op's attributes are the trimmed ones).
    Plain(std::sync::Arc<Tensor>),
}

impl HeldConvWeight {
    /// Bytes the held weights take.
    pub fn bytes(&self) -> usize {
        match self {
            HeldConvWeight::Packed(w) => w.bytes(),
            HeldConvWeight::Grouped(w) => w.bytes(),
            HeldConvWeight::Plain(t) => t.numel() * 4,
        }
    }
}

/// Evaluates a fused Conv: inputs X, W unless `held`, then B, S, T, R as flagged.
pub(super) fn conv_epilogue(
    attrs: &ConvAttrs,
    held: Option<&HeldConvWeight>,
    [bias, scale, shift, residual]: [bool; 4],
    act: Option<ConvActivation>,
    inputs: &[&Tensor],
) -> KResult<Tensor> {
    let first = if held.is_some() { 1 } else { 2 };
    let n = first
        + [bias, scale, shift, residual]
            .iter()
            .filter(|&&p| p)
            .count();
    expect_inputs(inputs, n)?;
    let x = inputs[0];
    f32s(x, "X")?;
    let w = match held {
        Some(HeldConvWeight::Packed(p)) => ConvWeight::Packed(p),
        Some(HeldConvWeight::Grouped(p)) => ConvWeight::Grouped(p),
        Some(HeldConvWeight::Plain(t)) => {
            f32s(t, "W")?;
            ConvWeight::Tensor(t)
        }
        None => {
            f32s(inputs[1], "W")?;
            ConvWeight::Tensor(inputs[1])
        }
    };
    let mut rest = inputs[first..].iter().copied();
    let mut next = |present: bool| if present { rest.next() } else { None };
    let b = next(bias);
    let (s, t, r) = (next(scale), next(shift), next(residual));
    let epi = Epilogue {
        scale: s.map(|v| f32s(v, "scale")).transpose()?,
        shift: t.map(|v| f32s(v, "shift")).transpose()?,
        residual: r.map(|v| f32s(v, "residual")).transpose()?,
        act,
        ..Epilogue::default()
    };
    // conv_fused checks the lengths before reading; the residual's shape is checked here.
    let y = conv_fused(attrs, x, w, b, epi)?;
    match r {
        Some(r) if r.shape != y.shape => Err(format!(
            "residual {} does not have the Conv output's shape {:?}",
            describe(r),
            y.shape
        )),
        _ => Ok(y),
    }
}
