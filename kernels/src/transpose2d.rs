//! 2-D transposes of f32 matrices: `[rows, cols]` → `[cols, rows]`, by AVX-512 gathers
//! where the CPU has them, by 8×8 blocks in AVX2 registers where it has AVX2 only (the
//! channels-innermost depthwise Conv and MaxPool, and Transposes whose merged axes form a
//! batch of matrix transposes).

/// `[rows, cols]` → `[cols, rows]`.
#[inline(always)]
pub(crate) fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    transpose_pitched(src, cols, dst, rows, rows, cols);
}

/// Element `(r, c)` of a `rows × cols` matrix at `src[r·src_pitch + c]` to
/// `dst[c·dst_pitch + r]` (`src_pitch ≥ cols`, `dst_pitch ≥ rows`): a transpose into or out
/// of rows padded to a whole number of vectors. Elements past `cols` in a source row and
/// past `rows` in a destination row are neither read nor written.
#[inline(always)]
pub(crate) fn transpose_pitched(
    src: &[f32],
    src_pitch: usize,
    dst: &mut [f32],
    dst_pitch: usize,
    rows: usize,
    cols: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_pitch >= cols
            && dst_pitch >= rows
            && src.len() >= (rows - 1) * src_pitch + cols
            && dst.len() >= (cols - 1) * dst_pitch + rows,
        "transpose of {rows}×{cols} does not fit its buffers"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && rows >= 16 && src.len() < i32::MAX as usize
    {
        // SAFETY: the CPU supports AVX-512F; the assertion above keeps every element read
        // and written inside the slices, and every source offset fits in an i32 (checked
        // just above), as `transpose_avx512` requires.
        unsafe { transpose_avx512(src, src_pitch, dst, dst_pitch, rows, cols) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && rows >= 8 && cols >= 8 {
        // SAFETY: the CPU supports AVX2; the assertion above keeps every element read and
        // written inside the slices, as `transpose_avx2` requires.
        unsafe { transpose_avx2(src, src_pitch, dst, dst_pitch, rows, cols) };
        return;
    }
    for r in 0..rows {
        for (c, &v) in src[r * src_pitch..][..cols].iter().enumerate() {
            dst[c * dst_pitch + r] = v;
        }
    }
}

/// [`transpose_pitched`] on AVX-512. Whole 16×16 blocks are transposed in registers (16
/// loads, 64 shuffles, 16 stores); the columns past the last whole block of 16 and the rows
/// past the last whole block take one gather with stride `src_pitch` and one store per run of
/// 16 outputs (one column of up to 16 source rows). Gathers alone cost twice to three times
/// as much per element on the AMD EPYC test machine (MaxPool `[2,192,8,8]` channels
/// innermost: 41 µs, 70 % of it in the transposes). Used from 16 rows on: below, most
/// lanes of every gather are masked off and the scalar loop is faster.
///
/// # Safety
/// The CPU must support AVX-512F; `src` must hold `(rows − 1)·src_pitch + cols` elements
/// and `dst` `(cols − 1)·dst_pitch + rows`, and `src.len()` must fit in an `i32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(
    src: &[f32],
    src_pitch: usize,
    dst: &mut [f32],
    dst_pitch: usize,
    rows: usize,
    cols: usize,
) {
    use std::arch::x86_64::{
        _mm512_mask_i32gather_ps, _mm512_mask_storeu_ps, _mm512_mullo_epi32, _mm512_set1_epi32,
        _mm512_setr_epi32, _mm512_setzero_ps,
    };
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(src_pitch as i32));
    let whole_cols = cols / 16 * 16;
    let mut r0 = 0;
    while r0 < rows {
        let n = (rows - r0).min(16);
        let mask = crate::simd::lane_mask(n);
        let first_gathered = if n == 16 {
            for c0 in (0..whole_cols).step_by(16) {
                // SAFETY: the block reads rows r0..r0 + 16 and columns c0..c0 + 16 of the
                // source and writes rows c0..c0 + 16 and columns r0..r0 + 16 of the
                // destination, all inside the slices by the caller's contract.
                block16(
                    src.as_ptr().add(r0 * src_pitch + c0),
                    src_pitch,
                    dst.as_mut_ptr().add(c0 * dst_pitch + r0),
                    dst_pitch,
                );
            }
            whole_cols
        } else {
            0
        };
        for c in first_gathered..cols {
            // SAFETY: lane j < n reads src[(r0 + j)·src_pitch + c] and writes
            // dst[c·dst_pitch + r0 + j], inside the slices by the caller's contract;
            // masked-off lanes touch no memory.
            let v = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask,
                idx,
                src.as_ptr().add(r0 * src_pitch + c),
            );
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(c * dst_pitch + r0), mask, v);
        }
        r0 += n;
    }
}

/// [`transpose_pitched`] on AVX2: whole 8×8 blocks in registers ([`block8_avx2`]), the
/// rows and columns past the last whole block element by element.
///
/// # Safety
/// The CPU must support AVX2; `src` must hold `(rows − 1)·src_pitch + cols` elements and
/// `dst` `(cols − 1)·dst_pitch + rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(
    src: &[f32],
    src_pitch: usize,
    dst: &mut [f32],
    dst_pitch: usize,
    rows: usize,
    cols: usize,
) {
    let (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
    for r0 in (0..whole_rows).step_by(8) {
        for c0 in (0..whole_cols).step_by(8) {
            // SAFETY: rows r0..r0 + 8 and columns c0..c0 + 8 of the source, rows c0..c0 + 8
            // and columns r0..r0 + 8 of the destination: inside the slices by the caller's
            // contract.
            block8_avx2(
                src.as_ptr().add(r0 * src_pitch + c0),
                src_pitch,
                dst.as_mut_ptr().add(c0 * dst_pitch + r0),
                dst_pitch,
            );
        }
        for r in r0..r0 + 8 {
            for c in whole_cols..cols {
                dst[c * dst_pitch + r] = src[r * src_pitch + c];
            }
        }
    }
    for r in whole_rows..rows {
        for (c, &v) in src[r * src_pitch..][..cols].iter().enumerate() {
            dst[c * dst_pitch + r] = v;
        }
    }
}

/// Transposes the 8×8 block at `src` (rows `sp` apart) into `dst` (rows `dp` apart):
/// 32-bit interleaves of row pairs, 64-bit shuffles within 128-bit lanes, then 128-bit lane
/// swaps (24 shuffles for 64 elements).
///
/// # Safety
/// The CPU must support AVX2; `src + r·sp + c` and `dst + c·dp + r` must be valid for
/// reads and writes respectively, for every r, c below 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn block8_avx2(src: *const f32, sp: usize, dst: *mut f32, dp: usize) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    let mut r = [_mm256_loadu_ps(src); 8];
    for (i, ri) in r.iter_mut().enumerate().skip(1) {
        // SAFETY: row i < 8 of the block, valid by the caller's contract.
        *ri = _mm256_loadu_ps(src.add(i * sp));
    }
    // Per 128-bit lane: rows (2i, 2i + 1) interleaved, then groups of four columns.
    let mut t = [r[0]; 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for h in 0..2 {
        let (a, b, c, d) = (t[4 * h], t[4 * h + 1], t[4 * h + 2], t[4 * h + 3]);
        r[4 * h] = _mm256_shuffle_ps::<0x44>(a, c);
        r[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
        r[4 * h + 2] = _mm256_shuffle_ps::<0x44>(b, d);
        r[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
    }
    // r[k] (k < 4) holds columns k and k + 4 of rows 0..4 in its two lanes, r[4 + k] those of
    // rows 4..8: the low lanes pair into column k, the high ones into column k + 4.
    for k in 0..4 {
        let lo = _mm256_permute2f128_ps::<0x20>(r[k], r[4 + k]);
        let hi = _mm256_permute2f128_ps::<0x31>(r[k], r[4 + k]);
        // SAFETY: destination rows k and k + 4 < 8 of the block, valid by the caller's
        // contract.
        _mm256_storeu_ps(dst.add(k * dp), lo);
        _mm256_storeu_ps(dst.add((k + 4) * dp), hi);
    }
}

/// Transposes the 16×16 block at `src` (rows `sp` apart) into `dst` (rows `dp` apart):
/// interleaves of 32-bit, then 64-bit elements within 128-bit lanes, then two rounds of
/// 128-bit lane shuffles.
///
/// # Safety
/// The CPU must support AVX-512F; `src + r·sp + c` and `dst + c·dp + r` must be valid for
/// reads and writes respectively, for every r, c below 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn block16(src: *const f32, sp: usize, dst: *mut f32, dp: usize) {
    use std::arch::x86_64::{
        __m512, _mm512_castpd_ps, _mm512_castps_pd, _mm512_loadu_ps, _mm512_shuffle_f32x4,
        _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd,
        _mm512_unpacklo_ps,
    };
    let mut r = [_mm512_loadu_ps(src); 16];
    for (i, ri) in r.iter_mut().enumerate().skip(1) {
        // SAFETY: row i < 16 of the block, valid by the caller's contract.
        *ri = _mm512_loadu_ps(src.add(i * sp));
    }
    // Round 1: 32-bit interleaves of row pairs (2i, 2i + 1).
    let mut t = [r[0]; 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Round 2: 64-bit interleaves of (t[4i + j], t[4i + j + 2]).
    let pd = |v: __m512| _mm512_castps_pd(v);
    for i in 0..4 {
        for j in 0..2 {
            let (a, b) = (pd(t[4 * i + j]), pd(t[4 * i + j + 2]));
            r[4 * i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            r[4 * i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    // r[4i + k] now holds, in each 128-bit lane L, column 4L + k' of rows 4i..4i + 4 (k' the
    // order 0, 1, 2, 3 of the interleaves). Round 3: pair row groups (0, 1) and (2, 3) by
    // 128-bit lanes; round 4 finishes the lane transpose.
    for k in 0..4 {
        let (a, b, c, d) = (r[k], r[4 + k], r[8 + k], r[12 + k]);
        let ab_lo = _mm512_shuffle_f32x4::<0x88>(a, b);
        let ab_hi = _mm512_shuffle_f32x4::<0xDD>(a, b);
        let cd_lo = _mm512_shuffle_f32x4::<0x88>(c, d);
        let cd_hi = _mm512_shuffle_f32x4::<0xDD>(c, d);
        t[k] = _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo);
        t[8 + k] = _mm512_shuffle_f32x4::<0xDD>(ab_lo, cd_lo);
        t[4 + k] = _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi);
        t[12 + k] = _mm512_shuffle_f32x4::<0xDD>(ab_hi, cd_hi);
    }
    for (c, tc) in t.iter().enumerate() {
        // SAFETY: destination row c < 16 of the block, valid by the caller's contract.
        _mm512_storeu_ps(dst.add(c * dp), *tc);
    }
}

#[cfg(test)]
mod tests {
    use super::transpose_pitched;

    /// `dst` is `src` transposed, its padding past `rows` untouched (-1).
    fn check(src: &[f32], dst: &[f32], (rows, cols): (usize, usize), (sp, dp): (usize, usize)) {
        for c in 0..cols {
            for r in 0..dp {
                let want = if r < rows { src[r * sp + c] } else { -1.0 };
                assert_eq!(dst[c * dp + r], want, "{rows}×{cols} pitches {sp}, {dp}");
            }
        }
    }

    #[test]
    fn pitched_transposes_match_the_definition_and_leave_the_padding() {
        for (rows, cols) in [
            (1, 7),
            (5, 3),
            (16, 16),
            (17, 33),
            (40, 5),
            (48, 20),
            (3, 48),
            (8, 8),
            (23, 19),
        ] {
            for (extra_s, extra_d) in [(0, 0), (3, 0), (0, 5), (16, 9)] {
                let (sp, dp) = (cols + extra_s, rows + extra_d);
                let src: Vec<f32> = (0..rows * sp).map(|i| i as f32).collect();
                let mut dst = vec![-1f32; cols * dp];
                transpose_pitched(&src, sp, &mut dst, dp, rows, cols);
                check(&src, &dst, (rows, cols), (sp, dp));
                // The AVX2 path too where the CPU would take the AVX-512 one.
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut dst = vec![-1f32; cols * dp];
                    // SAFETY: the CPU supports AVX2; the buffers hold the pitched matrices.
                    unsafe { super::transpose_avx2(&src, sp, &mut dst, dp, rows, cols) };
                    check(&src, &dst, (rows, cols), (sp, dp));
                }
            }
        }
    }
}
