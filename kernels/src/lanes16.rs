//! Sixteen f32 lanes as one AVX-512 register or as two AVX2 registers, for kernels whose
//! data layout interleaves 16 channels (`[.., position, 16]`) and which run the same loops
//! on both instruction sets: the generic body is `#[inline(always)]` and is instantiated
//! inside one `#[target_feature]` function per set, where the intrinsics inline.
//!
//! The arithmetic is the same on both: one fused multiply-add per lane, so the two give
//! the same bits.

/// Sixteen f32 lanes (see the module docs). Every method is `unsafe`: the CPU must support
/// the implementation's instruction set, and pointers must be valid for 16 elements.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Lanes16: Copy {
    /// Lanes `p[0..16]`.
    ///
    /// # Safety
    /// The CPU supports the set; `p` is valid for reading 16 f32.
    unsafe fn load(p: *const f32) -> Self;
    /// Writes the lanes to `p[0..16]`.
    ///
    /// # Safety
    /// The CPU supports the set; `p` is valid for writing 16 f32.
    unsafe fn store(self, p: *mut f32);
    /// `w · v + acc` per lane, one rounding.
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn fmadd(w: Self, v: Self, acc: Self) -> Self;
    /// `v` in every lane.
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn splat(v: f32) -> Self;
    /// `a + b` per lane.
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// ReLU as the unfused kernel computes it: `x` where `x > 0` or NaN, +0 elsewhere.
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn relu(self) -> Self;
    /// Clip as the unfused kernel computes it: `lo` where `x < lo`, then `hi` where
    /// `x > hi` (NaN passes).
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn clip(self, lo: Self, hi: Self) -> Self;
    /// Lanes `p[0..n]` (all 16 from `n = 16` on), zeros past them.
    ///
    /// # Safety
    /// The CPU supports the set; `p` is valid for reading `min(n, 16)` f32.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    /// `a · b` per lane.
    ///
    /// # Safety
    /// The CPU supports the set.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// Writes lanes `0..n` (all 16 from `n = 16` on) to `p[0..n]`.
    ///
    /// # Safety
    /// The CPU supports the set; `p` is valid for writing `min(n, 16)` f32.
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// Transposes the 16×16 block at `src` (rows `sp` apart) into `dst` (rows `dp` apart).
    ///
    /// # Safety
    /// The CPU supports the set; `src + r·sp + c` and `dst + c·dp + r` are valid for reads
    /// and writes respectively, for every r, c below 16.
    unsafe fn transpose16(src: *const f32, sp: usize, dst: *mut f32, dp: usize);
}

/// One AVX-512 register.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx512(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes16 for Avx512 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(std::arch::x86_64::_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::arch::x86_64::_mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn fmadd(w: Self, v: Self, acc: Self) -> Self {
        Avx512(std::arch::x86_64::_mm512_fmadd_ps(w.0, v.0, acc.0))
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx512(std::arch::x86_64::_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Avx512(std::arch::x86_64::_mm512_add_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        use std::arch::x86_64::*;
        let keep = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(self.0, _mm512_setzero_ps());
        Avx512(_mm512_maskz_mov_ps(keep, self.0))
    }
    #[inline(always)]
    unsafe fn clip(self, lo: Self, hi: Self) -> Self {
        use std::arch::x86_64::*;
        let x = _mm512_mask_mov_ps(self.0, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, lo.0), lo.0);
        Avx512(_mm512_mask_mov_ps(
            x,
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, hi.0),
            hi.0,
        ))
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_maskz_loadu_ps};
        if n >= 16 {
            Avx512(_mm512_loadu_ps(p))
        } else {
            Avx512(_mm512_maskz_loadu_ps(super::simd::lane_mask(n), p))
        }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Avx512(std::arch::x86_64::_mm512_mul_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        use std::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_storeu_ps};
        if n >= 16 {
            _mm512_storeu_ps(p, self.0)
        } else {
            _mm512_mask_storeu_ps(p, super::simd::lane_mask(n), self.0)
        }
    }
    #[inline(always)]
    unsafe fn transpose16(src: *const f32, sp: usize, dst: *mut f32, dp: usize) {
        super::transpose2d::block16(src, sp, dst, dp)
    }
}

/// Two AVX2 registers: lanes 0..8 and 8..16.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2(std::arch::x86_64::__m256, std::arch::x86_64::__m256);

#[cfg(target_arch = "x86_64")]
impl Lanes16 for Avx2 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        use std::arch::x86_64::_mm256_loadu_ps;
        Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        use std::arch::x86_64::_mm256_storeu_ps;
        _mm256_storeu_ps(p, self.0);
        _mm256_storeu_ps(p.add(8), self.1);
    }
    #[inline(always)]
    unsafe fn fmadd(w: Self, v: Self, acc: Self) -> Self {
        use std::arch::x86_64::_mm256_fmadd_ps;
        Avx2(
            _mm256_fmadd_ps(w.0, v.0, acc.0),
            _mm256_fmadd_ps(w.1, v.1, acc.1),
        )
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        let v = std::arch::x86_64::_mm256_set1_ps(v);
        Avx2(v, v)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        use std::arch::x86_64::_mm256_add_ps;
        Avx2(_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        use std::arch::x86_64::*;
        // All ones where x > 0 or unordered: AND keeps x there and gives +0 elsewhere.
        let z = _mm256_setzero_ps();
        Avx2(
            _mm256_and_ps(self.0, _mm256_cmp_ps::<_CMP_NLE_UQ>(self.0, z)),
            _mm256_and_ps(self.1, _mm256_cmp_ps::<_CMP_NLE_UQ>(self.1, z)),
        )
    }
    #[inline(always)]
    unsafe fn clip(self, lo: Self, hi: Self) -> Self {
        use std::arch::x86_64::*;
        let a = _mm256_blendv_ps(self.0, lo.0, _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, lo.0));
        let b = _mm256_blendv_ps(self.1, lo.1, _mm256_cmp_ps::<_CMP_LT_OQ>(self.1, lo.1));
        Avx2(
            _mm256_blendv_ps(a, hi.0, _mm256_cmp_ps::<_CMP_GT_OQ>(a, hi.0)),
            _mm256_blendv_ps(b, hi.1, _mm256_cmp_ps::<_CMP_GT_OQ>(b, hi.1)),
        )
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        if n >= 16 {
            Self::load(p)
        } else {
            let mut tmp = [0f32; 16];
            std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
            Self::load(tmp.as_ptr())
        }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        use std::arch::x86_64::_mm256_mul_ps;
        Avx2(_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        if n >= 16 {
            self.store(p)
        } else {
            let mut tmp = [0f32; 16];
            self.store(tmp.as_mut_ptr());
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
        }
    }
    #[inline(always)]
    unsafe fn transpose16(src: *const f32, sp: usize, dst: *mut f32, dp: usize) {
        // Source block (rb, cb) of 8×8 lands at destination block (cb, rb). Each block
        // reads or writes half of 8 cache lines (rows of 16): the two halves of a line on
        // the side with the longer pitch (planes 4 KB apart share cache sets) go one after
        // the other, before the next 8 rows can evict it.
        let order = if dp > sp {
            [(0, 0), (1, 0), (0, 1), (1, 1)]
        } else {
            [(0, 0), (0, 1), (1, 0), (1, 1)]
        };
        for (rb, cb) in order {
            super::transpose2d::block8_avx2(
                src.add(rb * 8 * sp + cb * 8),
                sp,
                dst.add(cb * 8 * dp + rb * 8),
                dp,
            );
        }
    }
}

/// Which implementation of [`Lanes16`] this CPU runs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LanesIsa {
    /// AVX-512F.
    Avx512,
    /// AVX2 and FMA (no AVX-512F).
    Avx2,
}

/// The widest [`Lanes16`] implementation this CPU supports.
pub(crate) fn lanes_isa() -> Option<LanesIsa> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(LanesIsa::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(LanesIsa::Avx2);
        }
    }
    None
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::{Avx2, Lanes16};

    #[test]
    fn two_avx2_registers_transpose_sixteen_by_sixteen() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            eprintln!("skipped: needs AVX2 and FMA");
            return;
        }
        let (sp, dp) = (19, 17);
        let src: Vec<f32> = (0..16 * sp).map(|i| i as f32).collect();
        let mut dst = vec![-1f32; 16 * dp];
        // SAFETY: AVX2 checked above; 16 rows of `sp` and of `dp` elements.
        unsafe { Avx2::transpose16(src.as_ptr(), sp, dst.as_mut_ptr(), dp) };
        for c in 0..16 {
            for r in 0..dp {
                let want = if r < 16 { src[r * sp + c] } else { -1.0 };
                assert_eq!(dst[c * dp + r], want, "row {r} column {c}");
            }
        }
    }
}
