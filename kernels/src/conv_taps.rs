//! Tap tables for direct convolution loops: for every kernel tap, the runs of output
//! positions that read the input plane (an output offset, the input offset of the run's
//! first element and its length; along a run the input advances by the last axis' stride).
//! They depend only on the window geometry, so one table serves every plane of a Conv call:
//! the depthwise loop and im2col walk these runs instead of recomputing the row geometry
//! (and allocating its index vectors) per plane and tap, which dominated on 2×2 and 4×4
//! planes.
use super::simd::fma;
use super::window::Window;

/// Multiply-adds below which a depthwise Conv stays on one thread (splitting costs more).
pub(crate) const PARALLEL_MIN_TAPS: usize = 1 << 18;

/// Runs `images(first, dst)` on runs of whole images of `out` (`image` elements each; `dst`
/// starts at image `first`): split over the device's rayon threads when it has several,
/// there is more than one image and the call does at least [`PARALLEL_MIN_TAPS`]
/// multiply-adds (`macs`); else one run of all images.
pub(crate) fn over_images<F>(out: &mut [f32], image: usize, macs: usize, images: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    use rayon::prelude::*;
    let n = out.len().checked_div(image).unwrap_or(0);
    let threads = crate::pool_threads();
    if threads > 1 && n > 1 && macs >= crate::split_min(PARALLEL_MIN_TAPS) {
        let per = n.div_ceil(threads);
        out.par_chunks_mut(per * image)
            .enumerate()
            .for_each(|(i, dst)| images(i * per, dst));
    } else {
        images(0, out);
    }
}

/// One run of a tap: `len` outputs from `dst` read the input from `src` on, `stride` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// Offset of the first output of the run in the output plane.
    pub dst: usize,
    /// Offset of the input element the first output reads.
    pub src: usize,
    /// Number of outputs in the run.
    pub len: usize,
}

/// The runs of every kernel tap of one window, stored flat.
pub(crate) struct TapTable {
    runs: Vec<Run>,
    /// `runs[starts[kp]..starts[kp + 1]]` are tap `kp`'s runs.
    starts: Vec<usize>,
    /// Whether tap `kp`'s runs cover the whole output plane (no padding reached).
    full: Vec<bool>,
    /// Input step along a run (the last axis' stride).
    pub stride: usize,
    /// Output plane size.
    pub plane: usize,
}

impl TapTable {
    /// Builds the table for every tap of `win`, in the window's tap order.
    pub fn new(win: &Window) -> Self {
        let kidx: Vec<Vec<usize>> = (0..win.kernel_len())
            .map(|kp| win.kernel_index(kp))
            .collect();
        let l = win.drive.len() - 1;
        let p_out = win.drive_plane();
        let mut runs = Vec::new();
        let mut starts = Vec::with_capacity(kidx.len() + 1);
        let mut full = Vec::with_capacity(kidx.len());
        for ki in &kidx {
            starts.push(runs.len());
            let first = runs.len();
            let (lo, hi, a0) = win.inner_range(ki[l]);
            if lo < hi {
                win.rows(ki, |row, src| {
                    if let Some(o) = src {
                        runs.push(Run {
                            dst: row + lo,
                            src: o + a0,
                            len: hi - lo,
                        });
                    }
                });
            }
            let covered: usize = runs[first..].iter().map(|r| r.len).sum();
            full.push(covered == p_out);
        }
        starts.push(runs.len());
        TapTable {
            runs,
            starts,
            full,
            stride: win.strides[l],
            plane: p_out,
        }
    }

    /// Tap `kp`'s runs.
    #[inline(always)]
    pub fn runs(&self, kp: usize) -> &[Run] {
        &self.runs[self.starts[kp]..self.starts[kp + 1]]
    }

    /// Whether tap `kp` reads an input element for every output position.
    #[inline(always)]
    pub fn full(&self, kp: usize) -> bool {
        self.full[kp]
    }

    /// Number of taps.
    pub fn taps(&self) -> usize {
        self.full.len()
    }
}

/// Per output position of `taps`, the (tap, input position) pairs it reads, in ascending tap
/// order, as offsets into channels-innermost `[tap, c]` weights and `[position, c]` inputs:
/// position o's pairs are `pairs[starts[o]..starts[o + 1]]` (one flat table per call).
pub(crate) fn position_pairs(taps: &TapTable, c: usize) -> (Vec<(usize, usize)>, Vec<usize>) {
    let (p_out, kl, stride) = (taps.plane, taps.taps(), taps.stride);
    let mut starts = vec![0usize; p_out + 1];
    for kp in 0..kl {
        for r in taps.runs(kp) {
            for j in 0..r.len {
                starts[r.dst + j + 1] += 1;
            }
        }
    }
    for o in 0..p_out {
        starts[o + 1] += starts[o];
    }
    let mut fill = starts.clone();
    let mut pairs = vec![(0usize, 0usize); starts[p_out]];
    for kp in 0..kl {
        for r in taps.runs(kp) {
            for j in 0..r.len {
                let o = r.dst + j;
                pairs[fill[o]] = (kp * c, (r.src + j * stride) * c);
                fill[o] += 1;
            }
        }
    }
    (pairs, starts)
}

/// Adds `wk ×` the input of every run of one tap into `dst` (one fused multiply-add each).
#[inline(always)]
pub(crate) fn axpy_runs(runs: &[Run], stride: usize, wk: f32, src: &[f32], dst: &mut [f32]) {
    for r in runs {
        let d = &mut dst[r.dst..r.dst + r.len];
        match stride {
            1 => {
                let s = &src[r.src..r.src + r.len];
                for (dv, sv) in d.iter_mut().zip(s) {
                    *dv = fma(wk, *sv, *dv);
                }
            }
            // A constant stride the compiler can vectorise (de-interleaving loads).
            2 => {
                let s = &src[r.src..][..2 * r.len - 1];
                for (j, dv) in d.iter_mut().enumerate() {
                    *dv = fma(wk, s[2 * j], *dv);
                }
            }
            _ => {
                let s = &src[r.src..];
                for (j, dv) in d.iter_mut().enumerate() {
                    *dv = fma(wk, s[j * stride], *dv);
                }
            }
        }
    }
}

/// Copies the input of every run of one tap into `dst` (positions outside the runs keep
/// their value; the caller zeroes them when the tap is not full).
#[inline(always)]
pub(crate) fn copy_runs(runs: &[Run], stride: usize, src: &[f32], dst: &mut [f32]) {
    for r in runs {
        let d = &mut dst[r.dst..r.dst + r.len];
        match stride {
            1 => d.copy_from_slice(&src[r.src..r.src + r.len]),
            2 => deinterleave(&src[r.src..][..2 * r.len - 1], d),
            _ => {
                let s = &src[r.src..];
                for (j, dv) in d.iter_mut().enumerate() {
                    *dv = s[j * stride];
                }
            }
        }
    }
}

/// `dst[t] = src[2·t]` (`src` holds at least `2·dst.len() − 1` elements). The compiler
/// keeps a stride-2 copy scalar whatever its shape, so AVX-512 CPUs take one two-register
/// permute per 16 outputs.
#[inline(always)]
pub(crate) fn deinterleave(src: &[f32], dst: &mut [f32]) {
    let mut t = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        t = unsafe { deinterleave_avx512(src, dst) };
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        t = unsafe { deinterleave_avx2(src, dst) };
    }
    for (j, d) in dst[t..].iter_mut().enumerate() {
        *d = src[2 * (t + j)];
    }
}

/// Outputs from which the last chunk of [`deinterleave_avx512`] is masked rather than left
/// to the scalar loop.
#[cfg(target_arch = "x86_64")]
const TAIL_MIN: usize = 8;

/// The AVX-512 part of [`deinterleave`]: writes the outputs 16 at a time, then a last chunk
/// of at least [`TAIL_MIN`] with masked loads and a masked store (a row of 31 inputs has
/// phase rows of 16 and 15 outputs: the second was a scalar loop, the hottest part of a
/// ceil-mode 3×3/2 MaxPool);
/// returns how many outputs it wrote (the caller copies the rest).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn deinterleave_avx512(src: &[f32], dst: &mut [f32]) -> usize {
    use super::simd::lane_mask;
    use std::arch::x86_64::{
        _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps,
        _mm512_setr_epi32, _mm512_storeu_ps,
    };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut t = 0;
    // A whole chunk reads src[2t .. 2t + 31] (its last output is src[2t + 30]).
    while t + 16 <= dst.len() && 2 * t + 31 <= src.len() {
        let mask = lane_mask(src.len() - 2 * t - 16);
        // SAFETY: src[2t .. 2t + 16] is in bounds (2t + 31 <= len); the masked load reads
        // only the `rest` elements from 2t + 16, all before src.len(); dst[t .. t + 16] is in
        // bounds (t + 16 <= dst.len()) and exclusively borrowed.
        unsafe {
            let a = _mm512_loadu_ps(src.as_ptr().add(2 * t));
            let b = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(2 * t + 16));
            _mm512_storeu_ps(dst.as_mut_ptr().add(t), _mm512_permutex2var_ps(a, even, b));
        }
        t += 16;
    }
    // The last chunk, when long enough to pay for masks: output j reads src[2j].
    let here = dst
        .len()
        .min(src.len().div_ceil(2))
        .saturating_sub(t)
        .min(16);
    if here >= TAIL_MIN {
        let avail = src.len() - 2 * t;
        let (ma, mb) = (lane_mask(avail), lane_mask(avail.saturating_sub(16)));
        // SAFETY: the masked loads read only src[2t + l] (lanes of `ma`, l < avail) and
        // src[2t + 16 + l] (lanes of `mb`, l < avail − 16), all below src.len(); the masked
        // store writes dst[t + l] for l < `here` <= dst.len() − t; dst is exclusively
        // borrowed.
        unsafe {
            let a = _mm512_maskz_loadu_ps(ma, src.as_ptr().add(2 * t));
            let b = _mm512_maskz_loadu_ps(mb, src.as_ptr().add(2 * t + 16));
            let v = _mm512_permutex2var_ps(a, even, b);
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(t), lane_mask(here), v);
        }
        t += here;
    }
    t
}

/// The AVX2 part of [`deinterleave`]: eight outputs per two loads, a shuffle of the even
/// elements within each 128-bit half and a permute of the 64-bit quarters; the last chunk
/// of four to eight outputs with masked loads. Returns how many outputs
/// it wrote. The scalar loop took 60 % of a 3×3/2 MaxPool on `[2, 64, 31, 31]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn deinterleave_avx2(src: &[f32], dst: &mut [f32]) -> usize {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_castpd_ps, _mm256_castps_pd, _mm256_cmpgt_epi32, _mm256_loadu_ps,
        _mm256_maskload_ps, _mm256_permute4x64_pd, _mm256_set1_epi32, _mm256_setr_epi32,
        _mm256_shuffle_ps, _mm256_storeu_ps,
    };
    // Even elements of a (8 lanes) then of b: [a0 a2 b0 b2 | a4 a6 b4 b6] by the shuffle,
    // quarters reordered to [a0 a2 a4 a6 | b0 b2 b4 b6].
    #[inline(always)]
    fn evens(a: __m256, b: __m256) -> __m256 {
        // SAFETY: register-only AVX2 operations (the caller enables AVX2).
        unsafe {
            let v = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        }
    }
    // Lanes below `k` set.
    #[inline(always)]
    fn first(k: usize) -> __m256i {
        let k = k.min(8) as i32;
        // SAFETY: register-only AVX2 operations (the caller enables AVX2).
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(k),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }
    let mut t = 0;
    // A whole chunk reads src[2t .. 2t + 16].
    while t + 8 <= dst.len() && 2 * t + 16 <= src.len() {
        // SAFETY: src[2t .. 2t + 16] and dst[t .. t + 8] are in bounds (checked by the loop
        // condition); dst is exclusively borrowed.
        unsafe {
            let a = _mm256_loadu_ps(src.as_ptr().add(2 * t));
            let b = _mm256_loadu_ps(src.as_ptr().add(2 * t + 8));
            _mm256_storeu_ps(dst.as_mut_ptr().add(t), evens(a, b));
        }
        t += 8;
    }
    // The last chunk: output j reads src[2j].
    let here = dst
        .len()
        .min(src.len().div_ceil(2))
        .saturating_sub(t)
        .min(8);
    if here >= 4 {
        let avail = src.len() - 2 * t;
        // SAFETY: the masked loads read only src[2t + l] (l < avail) and src[2t + 8 + l]
        // (l < avail − 8), all below src.len(); the store writes a local buffer.
        unsafe {
            let a = _mm256_maskload_ps(src.as_ptr().add(2 * t), first(avail));
            let b = _mm256_maskload_ps(
                src.as_ptr().add(2 * t).wrapping_add(8),
                first(avail.saturating_sub(8)),
            );
            // A masked store costs dozens of cycles on AMD: through a register-sized buffer.
            let mut buf = [0f32; 8];
            _mm256_storeu_ps(buf.as_mut_ptr(), evens(a, b));
            dst[t..t + here].copy_from_slice(&buf[..here]);
        }
        t += here;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::deinterleave;

    /// Every length (whole chunks of 16, short last chunks, an input of 2n − 1 or 2n
    /// elements) gives the even elements.
    #[test]
    fn deinterleave_takes_the_even_elements_at_every_length() {
        for n in 0usize..70 {
            for extra in [0, 1] {
                let len = (2 * n).saturating_sub(1) + extra;
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 1.5 - 7.0).collect();
                let mut dst = vec![f32::NAN; n];
                deinterleave(&src, &mut dst);
                let want: Vec<f32> = (0..n).map(|j| src[2 * j]).collect();
                assert_eq!(dst, want, "n {n}, src {len}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // The AVX2 part alone (AVX-512 machines take the other), then the rest.
                    let mut dst = vec![f32::NAN; n];
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    let t = unsafe { super::deinterleave_avx2(&src, &mut dst) };
                    assert!(
                        n < 4 || t + 4 > n,
                        "n {n}: {t} outputs left to the scalar loop"
                    );
                    for (j, d) in dst[t..].iter_mut().enumerate() {
                        *d = src[2 * (t + j)];
                    }
                    assert_eq!(dst, want, "AVX2, n {n}, src {len}");
                }
            }
        }
    }
}
