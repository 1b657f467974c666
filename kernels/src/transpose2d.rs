//! 2-D transposes of f32 matrices: `[rows, cols]` → `[cols, rows]`, by AVX-512 gathers
//! where the CPU has them (the channels-innermost depthwise Conv, and Transposes whose
//! merged axes form a batch of matrix transposes).

/// `[rows, cols]` → `[cols, rows]`.
#[inline(always)]
pub(crate) fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && rows >= 16
        && src.len() >= rows * cols
        && dst.len() >= rows * cols
        && rows * cols < i32::MAX as usize
    {
        // SAFETY: the CPU supports AVX-512F and both slices hold rows·cols elements, which
        // fit in an i32 (checked just above), as `transpose_avx512` requires.
        unsafe { transpose_avx512(src, dst, rows, cols) };
        return;
    }
    for (r, row) in src.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

/// [`transpose`] on AVX-512: each run of 16 outputs (one column of 16 source rows) is one
/// gather with stride `cols` and one store, where the scalar loop stores element by element
/// `rows` apart (half the channels-innermost Conv's time on 4×4 planes; a quarter of a Transpose's). Used from 16 rows
/// on: below, most lanes of every gather are masked off and the scalar loop is faster.
///
/// # Safety
/// The CPU must support AVX-512F; `src` and `dst` must hold `rows·cols` elements, and
/// `rows·cols` must fit in an `i32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    use std::arch::x86_64::{
        _mm512_mask_i32gather_ps, _mm512_mask_storeu_ps, _mm512_mullo_epi32, _mm512_set1_epi32,
        _mm512_setr_epi32, _mm512_setzero_ps,
    };
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(cols as i32));
    let mut r0 = 0;
    while r0 < rows {
        let n = (rows - r0).min(16);
        let mask = crate::simd::lane_mask(n);
        for c in 0..cols {
            // SAFETY: lane j < n reads src[(r0 + j)·cols + c] and writes dst[c·rows + r0 + j],
            // both below rows·cols; masked-off lanes touch no memory.
            let v = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask,
                idx,
                src.as_ptr().add(r0 * cols + c),
            );
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(c * rows + r0), mask, v);
        }
        r0 += n;
    }
}
