//! Row reductions in split lanes: sums and maxima of f32 rows (norms, softmax, attention),
//! accumulated in [`LANES`] interleaved partial results, then the lanes combined in a
//! pairwise tree (lane i with lane i + 8, then + 4, + 2, + 1). The order is fixed, so every
//! path gives the same bits: AVX-512 (one register), AVX2 (two registers) and the portable
//! loop.
//!
//! The x86 paths use intrinsics. The portable loop over a `[f32; 16]` accumulator is what
//! LLVM compiles elsewhere, and on x86 it splits that loop into 2-lane pieces (measured:
//! 2.8 µs for the sums of 136 rows of 64, against 0.31 µs in one AVX-512 register).
#[cfg(target_arch = "x86_64")]
use crate::lanes16::{lanes_isa, LanesIsa};
use crate::simd::LANES;

/// Sum of `v` in the fixed order of the module docs.
#[inline(always)]
pub(crate) fn sum(v: &[f32]) -> f32 {
    sum_by(v, |x| x)
}

/// Sum of `f(x)` over `v`, accumulated as [`sum`] (the same order for the same values).
#[inline(always)]
pub(crate) fn sum_by(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match lanes_isa() {
        // SAFETY: the CPU supports AVX-512F (`lanes_isa` checked it).
        Some(LanesIsa::Avx512) => return unsafe { x86::sum_by_avx512(v, &f) },
        // SAFETY: the CPU supports AVX2 and FMA (`lanes_isa` checked them).
        Some(LanesIsa::Avx2) => return unsafe { x86::sum_by_avx2(v, &f) },
        None => {}
    }
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        let t = mapped(c, &f);
        for i in 0..LANES {
            acc[i] += t[i];
        }
    }
    sum_lanes(acc) + tail
}

/// Replaces every element of `v` by `f(x)` and returns their sum, accumulated as [`sum`]
/// (the softmax's exponentials and their sum in one pass).
#[inline(always)]
pub(crate) fn sum_map(v: &mut [f32], f: impl Fn(f32) -> f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match lanes_isa() {
        // SAFETY: the CPU supports AVX-512F (`lanes_isa` checked it).
        Some(LanesIsa::Avx512) => return unsafe { x86::sum_map_avx512(v, &f) },
        // SAFETY: the CPU supports AVX2 and FMA (`lanes_isa` checked them).
        Some(LanesIsa::Avx2) => return unsafe { x86::sum_map_avx2(v, &f) },
        None => {}
    }
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let t = mapped(c, &f);
        c.copy_from_slice(&t);
        for i in 0..LANES {
            acc[i] += t[i];
        }
    }
    sum_lanes(acc) + map_tail(chunks.into_remainder(), &f)
}

/// Largest element of `v` ignoring NaNs (−∞ for an empty or all-NaN slice), as
/// `fold(f32::NEG_INFINITY, f32::max)`: a lane takes x only where `x > lane`, so a NaN
/// never enters one.
#[inline(always)]
pub(crate) fn max(v: &[f32]) -> f32 {
    let chunks = v.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    match lanes_isa() {
        // SAFETY: the CPU supports AVX-512F (`lanes_isa` checked it).
        Some(LanesIsa::Avx512) => return f32::max(unsafe { x86::max_avx512(chunks) }, tail),
        // SAFETY: the CPU supports AVX2 and FMA (`lanes_isa` checked them).
        Some(LanesIsa::Avx2) => return f32::max(unsafe { x86::max_avx2(chunks) }, tail),
        None => {}
    }
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            let x = acc[i + width];
            acc[i] = if x > acc[i] { x } else { acc[i] };
        }
        width /= 2;
    }
    f32::max(acc[0], tail)
}

/// `f` over a chunk of [`LANES`] elements, as an array (a map into a fixed-size array
/// compiles to full-width vectors).
#[inline(always)]
fn mapped(c: &[f32], f: &impl Fn(f32) -> f32) -> [f32; LANES] {
    let mut t = [0f32; LANES];
    for i in 0..LANES {
        t[i] = f(c[i]);
    }
    t
}

/// Replaces the elements past the last whole chunk by `f(x)`; their sum from 0, in order.
#[inline(always)]
fn map_tail(tail: &mut [f32], f: &impl Fn(f32) -> f32) -> f32 {
    let mut s = 0f32;
    for r in tail {
        *r = f(*r);
        s += *r;
    }
    s
}

/// The lanes of split accumulators added in the module's pairwise tree.
#[inline(always)]
fn sum_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{map_tail, mapped, LANES};
    use std::arch::x86_64::*;
    use std::slice::ChunksExact;

    /// Lanes 8..16 of an AVX-512 register (AVX-512F only; `extractf32x8` needs DQ).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn high_half(v: __m512) -> __m256 {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
    }

    /// The 8 lanes of `h` (already lane i + lane i + 8) added as the tree goes on: + 4,
    /// + 2, + 1.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sum8(h: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }

    /// The largest of the 8 lanes of `h` in the same tree; `max(x, lane)` keeps the lane
    /// where x is not greater, as the portable loop.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn max8(h: __m256) -> f32 {
        let q = _mm_max_ps(_mm256_extractf128_ps::<1>(h), _mm256_castps256_ps128(h));
        let d = _mm_max_ps(_mm_movehl_ps(q, q), q);
        _mm_cvtss_f32(_mm_max_ss(_mm_movehdup_ps(d), d))
    }

    /// [`super::sum_by`] in one AVX-512 register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn sum_by_avx512(v: &[f32], f: &impl Fn(f32) -> f32) -> f32 {
        let chunks = v.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        let mut acc = _mm512_setzero_ps();
        for c in chunks {
            let t = mapped(c, f);
            // SAFETY: `t` holds 16 f32.
            acc = _mm512_add_ps(acc, unsafe { _mm512_loadu_ps(t.as_ptr()) });
        }
        let lo = _mm512_castps512_ps256(acc);
        sum8(_mm256_add_ps(lo, high_half(acc))) + tail
    }

    /// [`super::sum_by`] in two AVX2 registers (lanes 0..8 and 8..16).
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_by_avx2(v: &[f32], f: &impl Fn(f32) -> f32) -> f32 {
        let chunks = v.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in chunks {
            let t = mapped(c, f);
            // SAFETY: `t` holds 16 f32.
            unsafe {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(t.as_ptr()));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(t.as_ptr().add(8)));
            }
        }
        sum8(_mm256_add_ps(lo, hi)) + tail
    }

    /// [`super::sum_map`] in one AVX-512 register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn sum_map_avx512(v: &mut [f32], f: &impl Fn(f32) -> f32) -> f32 {
        let mut chunks = v.chunks_exact_mut(LANES);
        let mut acc = _mm512_setzero_ps();
        for c in &mut chunks {
            let t = mapped(c, f);
            c.copy_from_slice(&t);
            // SAFETY: `t` holds 16 f32.
            acc = _mm512_add_ps(acc, unsafe { _mm512_loadu_ps(t.as_ptr()) });
        }
        let lo = _mm512_castps512_ps256(acc);
        sum8(_mm256_add_ps(lo, high_half(acc))) + map_tail(chunks.into_remainder(), f)
    }

    /// [`super::sum_map`] in two AVX2 registers.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_map_avx2(v: &mut [f32], f: &impl Fn(f32) -> f32) -> f32 {
        let mut chunks = v.chunks_exact_mut(LANES);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in &mut chunks {
            let t = mapped(c, f);
            c.copy_from_slice(&t);
            // SAFETY: `t` holds 16 f32.
            unsafe {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(t.as_ptr()));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(t.as_ptr().add(8)));
            }
        }
        sum8(_mm256_add_ps(lo, hi)) + map_tail(chunks.into_remainder(), f)
    }

    /// The largest lane over whole chunks (−∞ for none) in one AVX-512 register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn max_avx512(chunks: ChunksExact<'_, f32>) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in chunks {
            // SAFETY: a chunk holds 16 f32.
            acc = _mm512_max_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, acc);
        }
        max8(_mm256_max_ps(high_half(acc), _mm512_castps512_ps256(acc)))
    }

    /// The largest lane over whole chunks (−∞ for none) in two AVX2 registers.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_avx2(chunks: ChunksExact<'_, f32>) -> f32 {
        let (mut lo, mut hi) = (
            _mm256_set1_ps(f32::NEG_INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        for c in chunks {
            // SAFETY: a chunk holds 16 f32.
            unsafe {
                lo = _mm256_max_ps(_mm256_loadu_ps(c.as_ptr()), lo);
                hi = _mm256_max_ps(_mm256_loadu_ps(c.as_ptr().add(8)), hi);
            }
        }
        max8(_mm256_max_ps(hi, lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable loops of the module, for comparison with the dispatched paths.
    fn portable_sum_by(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut acc = [0f32; LANES];
        let chunks = v.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        for c in chunks {
            for i in 0..LANES {
                acc[i] += f(c[i]);
            }
        }
        sum_lanes(acc) + tail
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 200.0 - 100.0
            })
            .collect()
    }

    #[test]
    fn every_path_gives_the_tree_order_bits() {
        // The pairwise tree over 16 lanes of one chunk, written out.
        let a: Vec<f32> = values(16, 3);
        let tree = ((((a[0] + a[8]) + (a[4] + a[12])) + ((a[2] + a[10]) + (a[6] + a[14])))
            + (((a[1] + a[9]) + (a[5] + a[13])) + ((a[3] + a[11]) + (a[7] + a[15]))))
            + 0.0;
        assert_eq!(sum(&a).to_bits(), tree.to_bits());
        for n in 0..100 {
            let v = values(n, n as u32);
            let want = portable_sum_by(&v, |x| x * x - 1.0);
            assert_eq!(
                sum_by(&v, |x| x * x - 1.0).to_bits(),
                want.to_bits(),
                "n={n}"
            );
            assert_eq!(
                sum(&v).to_bits(),
                portable_sum_by(&v, |x| x).to_bits(),
                "n={n}"
            );
            let mut m = v.clone();
            let s = sum_map(&mut m, |x| x * 0.5);
            assert_eq!(
                s.to_bits(),
                portable_sum_by(&v, |x| x * 0.5).to_bits(),
                "n={n}"
            );
            assert!(m.iter().zip(&v).all(|(a, b)| *a == b * 0.5));
            let want = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&v), want, "n={n}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // The AVX2 path, which this machine's dispatch may not take.
                let f = |x: f32| x * x - 1.0;
                let want = portable_sum_by(&v, f);
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                let (s, mut m2) = (unsafe { x86::sum_by_avx2(&v, &f) }, v.clone());
                assert_eq!(s.to_bits(), want.to_bits(), "avx2 n={n}");
                // SAFETY: as above.
                let s = unsafe { x86::sum_map_avx2(&mut m2, &f) };
                assert_eq!(s.to_bits(), want.to_bits(), "avx2 n={n}");
                let tail = v.chunks_exact(LANES).remainder().iter().copied();
                let tail = tail.fold(f32::NEG_INFINITY, f32::max);
                // SAFETY: as above.
                let m = f32::max(unsafe { x86::max_avx2(v.chunks_exact(LANES)) }, tail);
                assert_eq!(m, max(&v), "avx2 n={n}");
            }
        }
    }

    #[test]
    fn max_skips_nans_and_empty_rows() {
        let mut v = values(40, 9);
        v[3] = f32::NAN;
        v[20] = f32::NAN;
        v[39] = f32::NAN;
        v[17] = 1000.0;
        assert_eq!(max(&v), 1000.0);
        assert_eq!(max(&[f32::NAN; 33]), f32::NEG_INFINITY);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(sum(&[]), 0.0);
    }
}
