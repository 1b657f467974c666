//! The vector form of the Conv epilogue (`conv_epilogue.rs`) for the activations that are a
//! compare and a blend (none, ReLU, Clip): explicit 16-lane passes (one AVX-512 register or
//! two AVX2 ones, `lanes16.rs`) with a partial last vector, the unfused ops' arithmetic bit
//! for bit (ReLU gives +0 for -0 and keeps NaN; Clip replaces `x < lo`, then `x > hi`).
//!
//! Left to the loop vectoriser, in-place loops over pieces of a few hundred elements ran
//! their tails 8 lanes at a time through masks on AVX-512 (a ReLU took as long as a
//! 16-channel 1×1 Conv), and on AVX2 a ReLU after a `[72, 16]` 1×1 Conv over two 16×16 maps
//! added 19 µs to its 22. `Epilogue::apply` chooses: every part on AVX-512; on AVX2 only
//! epilogues ending in a ReLU, the vectoriser's other passes being as fast or faster there.
//! HardSigmoid and HardSwish stay with the vectoriser (in this form 1.16× its time on AVX2).
#![cfg(target_arch = "x86_64")]
use super::conv_epilogue::ConvActivation;
use super::lanes16::{Avx2, Avx512, Lanes16, LanesIsa};

/// `act((((x + bias) · scale) + shift) + residual)` on every element of `dst`: one pass per
/// part given (the piece is in L1), each 16 lanes at a time with a partial last vector, each
/// one rounding as the unfused ops.
///
/// # Safety
/// The CPU supports `isa`; `residual`, when given, is as long as `dst`.
pub(crate) unsafe fn piece(
    isa: LanesIsa,
    dst: &mut [f32],
    per_channel: (Option<f32>, Option<f32>, Option<f32>),
    residual: Option<&[f32]>,
    act: Option<ConvActivation>,
) {
    match isa {
        LanesIsa::Avx512 => piece_avx512(dst, per_channel, residual, act),
        LanesIsa::Avx2 => piece_avx2(dst, per_channel, residual, act),
    }
}

/// [`piece_generic`] on AVX-512.
///
/// # Safety
/// AVX-512F; as [`piece`].
#[target_feature(enable = "avx512f")]
unsafe fn piece_avx512(
    dst: &mut [f32],
    per_channel: (Option<f32>, Option<f32>, Option<f32>),
    residual: Option<&[f32]>,
    act: Option<ConvActivation>,
) {
    piece_generic::<Avx512>(dst, per_channel, residual, act)
}

/// [`piece_generic`] on AVX2.
///
/// # Safety
/// AVX2 and FMA; as [`piece`].
#[target_feature(enable = "avx2,fma")]
unsafe fn piece_avx2(
    dst: &mut [f32],
    per_channel: (Option<f32>, Option<f32>, Option<f32>),
    residual: Option<&[f32]>,
    act: Option<ConvActivation>,
) {
    piece_generic::<Avx2>(dst, per_channel, residual, act)
}

/// The passes of [`piece`] on `V`.
///
/// # Safety
/// `V`'s instruction set; as [`piece`].
#[inline(always)]
unsafe fn piece_generic<V: Lanes16>(
    dst: &mut [f32],
    (bias, scale, shift): (Option<f32>, Option<f32>, Option<f32>),
    residual: Option<&[f32]>,
    act: Option<ConvActivation>,
) {
    if let Some(b) = bias {
        let b = V::splat(b);
        map16::<V>(dst, None, |x, _| V::add(x, b));
    }
    if let Some(s) = scale {
        let s = V::splat(s);
        map16::<V>(dst, None, |x, _| V::mul(x, s));
    }
    if let Some(t) = shift {
        let t = V::splat(t);
        map16::<V>(dst, None, |x, _| V::add(x, t));
    }
    if residual.is_some() {
        map16::<V>(dst, residual, |x, r| V::add(x, r));
    }
    match act {
        Some(ConvActivation::Relu) => map16::<V>(dst, None, |x, _| x.relu()),
        Some(ConvActivation::Clip { min, max }) => {
            let lo = V::splat(min.unwrap_or(f32::NEG_INFINITY));
            let hi = V::splat(max.unwrap_or(f32::INFINITY));
            map16::<V>(dst, None, |x, _| x.clip(lo, hi))
        }
        _ => {}
    }
}

/// `x = f(x, r)` over `dst` (with `r` the matching vector of `other`, zeros without one), 16
/// lanes at a time and the last vector partial.
///
/// # Safety
/// `V`'s instruction set; `other`, when given, is as long as `dst`.
#[inline(always)]
unsafe fn map16<V: Lanes16>(dst: &mut [f32], other: Option<&[f32]>, f: impl Fn(V, V) -> V) {
    let (n, p) = (dst.len(), dst.as_mut_ptr());
    let q = other.map_or(std::ptr::null(), |o| o.as_ptr());
    let mut i = 0;
    while i < n {
        let lanes = n - i;
        // SAFETY: lanes i..min(n, i + 16) lie within dst and other (as long as dst); a
        // partial vector reads and writes those lanes only.
        let r = match q.is_null() {
            true => V::splat(0.0),
            false => V::load_first(q.add(i), lanes),
        };
        f(V::load_first(p.add(i), lanes), r).store_first(p.add(i), lanes);
        i += 16;
    }
}
