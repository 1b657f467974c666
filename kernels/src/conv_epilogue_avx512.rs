//! The vector (AVX-512) form of the Conv epilogue (`conv_epilogue.rs`) for the activations
//! that are a compare and a blend (none, ReLU, Clip): explicit 16-lane loops with a masked
//! last vector, the unfused ops' arithmetic bit for bit (ReLU gives +0 for -0 and keeps
//! NaN; Clip replaces `x < lo`, then `x > hi`). Left to the loop vectoriser, in-place loops
//! over pieces of a few hundred elements ran their tails 8 lanes at a time through masks.
#![cfg(target_arch = "x86_64")]
use super::conv_epilogue::ConvActivation;
use std::arch::x86_64::*;

/// An activation of the vector path (none, ReLU or Clip), its bounds broadcast once, with
/// the unfused kernels' arithmetic: ReLU keeps `x` where `x > 0` or NaN and gives +0
/// elsewhere; Clip replaces `x < lo` by `lo`, then `x > hi` by `hi` (NaN passes; an absent
/// bound is infinite, which no value compares beyond).
#[derive(Clone, Copy)]
pub(crate) enum VecAct {
    /// No activation (or one the vector path does not run).
    Identity,
    /// ReLU.
    Relu,
    /// Clip to `[lo, hi]`, broadcast.
    Clip(__m512, __m512),
}

impl VecAct {
    /// The vector form of `act` (None, ReLU, Clip; anything else is the identity).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn new(act: Option<ConvActivation>) -> Self {
        match act {
            Some(ConvActivation::Relu) => VecAct::Relu,
            Some(ConvActivation::Clip { min, max }) => VecAct::Clip(
                _mm512_set1_ps(min.unwrap_or(f32::NEG_INFINITY)),
                _mm512_set1_ps(max.unwrap_or(f32::INFINITY)),
            ),
            _ => VecAct::Identity,
        }
    }

    /// The activation of 16 values.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn apply(self, x: __m512) -> __m512 {
        match self {
            VecAct::Identity => x,
            VecAct::Relu => {
                let keep = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(x, _mm512_setzero_ps());
                _mm512_maskz_mov_ps(keep, x)
            }
            VecAct::Clip(lo, hi) => {
                let x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo), lo);
                _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi), hi)
            }
        }
    }
}

/// `act((((x + bias) · scale) + shift) + residual)` on every element of `dst`: one pass per
/// part given (the piece is in L1), each 16 lanes at a time with the last vector masked, each
/// one rounding as the unfused ops.
///
/// # Safety
/// AVX-512F; `residual`, when given, is as long as `dst`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn piece_avx512(
    dst: &mut [f32],
    (bias, scale, shift): (Option<f32>, Option<f32>, Option<f32>),
    residual: Option<&[f32]>,
    act: Option<ConvActivation>,
) {
    if let Some(b) = bias {
        let b = _mm512_set1_ps(b);
        map16(dst, None, |x, _| _mm512_add_ps(x, b));
    }
    if let Some(s) = scale {
        let s = _mm512_set1_ps(s);
        map16(dst, None, |x, _| _mm512_mul_ps(x, s));
    }
    if let Some(t) = shift {
        let t = _mm512_set1_ps(t);
        map16(dst, None, |x, _| _mm512_add_ps(x, t));
    }
    if residual.is_some() {
        map16(dst, residual, |x, r| _mm512_add_ps(x, r));
    }
    match VecAct::new(act) {
        VecAct::Identity => {}
        v => map16(dst, None, |x, _| v.apply(x)),
    }
}

/// `x = f(x, r)` over `dst` (with `r` the matching vector of `other`, zeros without one), 16
/// lanes at a time and the last vector masked.
///
/// # Safety
/// AVX-512F; `other`, when given, is as long as `dst`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn map16(dst: &mut [f32], other: Option<&[f32]>, f: impl Fn(__m512, __m512) -> __m512) {
    let (n, p) = (dst.len(), dst.as_mut_ptr());
    let q = other.map_or(std::ptr::null(), |o| o.as_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: lanes i..i + 16 lie within dst and other (as long as dst).
        let r = match q.is_null() {
            true => _mm512_setzero_ps(),
            false => _mm512_loadu_ps(q.add(i)),
        };
        _mm512_storeu_ps(p.add(i), f(_mm512_loadu_ps(p.add(i)), r));
        i += 16;
    }
    if i < n {
        let mask = super::simd::lane_mask(n - i);
        // SAFETY: the mask covers lanes i..n only.
        let r = match q.is_null() {
            true => _mm512_setzero_ps(),
            false => _mm512_maskz_loadu_ps(mask, q.add(i)),
        };
        let x = _mm512_maskz_loadu_ps(mask, p.add(i));
        _mm512_mask_storeu_ps(p.add(i), mask, f(x, r));
    }
}
