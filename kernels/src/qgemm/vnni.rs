//! The AVX-512 VNNI tiles of the integer GEMM ([`super::gemm_rows`]).
use super::{finish, Epi, PackedQWeight, LANES};
use std::arch::x86_64::*;

/// [`super::gemm_rows`] in tiles of up to 4 rows by 4 panels.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 VNNI; `a` holds `rows` rows of `groups·4`
/// bytes.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn gemm_rows(
    a: &[u8],
    rowsum: &[i32],
    rows: usize,
    w: &PackedQWeight,
    e: &Epi,
    dst: &mut [f32],
) {
    let mut r = 0;
    while r < rows {
        let mr = (rows - r).min(4);
        let mut p = 0;
        while p < w.panels {
            let np = (w.panels - p).min(4);
            let mut sums = [[[0i32; LANES]; 4]; 4];
            // SAFETY: mr ≤ 4 rows from r and np ≤ 4 panels from p are in range.
            unsafe {
                match (mr, np) {
                    (4, 4) => tile::<4, 4>(a, r, p, w, &mut sums),
                    (4, 3) => tile::<4, 3>(a, r, p, w, &mut sums),
                    (4, 2) => tile::<4, 2>(a, r, p, w, &mut sums),
                    (4, _) => tile::<4, 1>(a, r, p, w, &mut sums),
                    (3, 4) => tile::<3, 4>(a, r, p, w, &mut sums),
                    (3, 3) => tile::<3, 3>(a, r, p, w, &mut sums),
                    (3, 2) => tile::<3, 2>(a, r, p, w, &mut sums),
                    (3, _) => tile::<3, 1>(a, r, p, w, &mut sums),
                    (2, 4) => tile::<2, 4>(a, r, p, w, &mut sums),
                    (2, 3) => tile::<2, 3>(a, r, p, w, &mut sums),
                    (2, 2) => tile::<2, 2>(a, r, p, w, &mut sums),
                    (2, _) => tile::<2, 1>(a, r, p, w, &mut sums),
                    (_, 4) => tile::<1, 4>(a, r, p, w, &mut sums),
                    (_, 3) => tile::<1, 3>(a, r, p, w, &mut sums),
                    (_, 2) => tile::<1, 2>(a, r, p, w, &mut sums),
                    (_, _) => tile::<1, 1>(a, r, p, w, &mut sums),
                }
            }
            // Whole panels in registers; the rest column by column.
            let whole = np.min(w.n / LANES - p.min(w.n / LANES));
            // SAFETY: AVX-512F (this function's features); rows r..r+mr and the whole
            // panels p..p+whole are inside dst.
            unsafe { finish_tile(&sums, (r, mr), (p, whole), rowsum, w, e, dst) };
            for (i, row) in sums.iter().enumerate().take(mr) {
                for (j, s) in row.iter().enumerate().take(np).skip(whole) {
                    finish(s, r + i, rowsum[r + i], p + j, w, e, dst);
                }
            }
            p += np;
        }
        r += mr;
    }
}

/// Sums of rows `r..r+MR` by panels `p..p+NP` over all of K.
///
/// # Safety
/// AVX-512F and VNNI; the rows and panels exist.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline(never)]
unsafe fn tile<const MR: usize, const NP: usize>(
    a: &[u8],
    r: usize,
    p: usize,
    w: &PackedQWeight,
    out: &mut [[[i32; LANES]; 4]; 4],
) {
    let stride = w.groups * 4;
    let mut acc = [[_mm512_setzero_si512(); NP]; MR];
    let wp = w.data.as_ptr();
    let ap = a.as_ptr();
    for g in 0..w.groups {
        let mut wv = [_mm512_setzero_si512(); NP];
        for (j, v) in wv.iter_mut().enumerate() {
            // SAFETY: panel p + j < panels and group g < groups: a whole 64-byte block
            // inside `data` (unaligned load).
            *v = unsafe {
                _mm512_loadu_si512(wp.add(((p + j) * w.groups + g) * LANES * 4) as *const _)
            };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row r + i < rows; its group g is 4 bytes inside the row.
            let four = unsafe { (ap.add((r + i) * stride + g * 4) as *const i32).read_unaligned() };
            let av = _mm512_set1_epi32(four);
            for (s, v) in row.iter_mut().zip(&wv) {
                *s = _mm512_dpbusd_epi32(*s, av, *v);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, s) in row.iter().enumerate() {
            // SAFETY: out[i][j] is 16 i32s (64 bytes).
            unsafe { _mm512_storeu_si512(out[i][j].as_mut_ptr() as *mut _, *s) };
        }
    }
}

/// The epilogue of one tile: rows `r..r+mr`, whole panels `p..p+np` (16 columns each,
/// all inside N): `sd·scale·(sum − β·rowsum − α·colsum + K·α·β) + bias`.
///
/// # Safety
/// AVX-512F; the rows and whole panels are inside `dst` (`rows × n`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn finish_tile(
    sums: &[[[i32; LANES]; 4]; 4],
    (r, mr): (usize, usize),
    (p, np): (usize, usize),
    rowsum: &[i32],
    w: &PackedQWeight,
    e: &Epi,
    dst: &mut [f32],
) {
    let alpha = _mm512_set1_ps(e.alpha);
    let kalpha = _mm512_set1_ps(w.k as f32 * e.alpha);
    let sd = _mm512_set1_ps(e.sd);
    for j in 0..np {
        let c0 = (p + j) * LANES;
        // SAFETY: the per-column vectors are padded to whole panels.
        let (beta, scale, colsum) = unsafe {
            (
                _mm512_loadu_ps(w.beta.as_ptr().add(c0)),
                _mm512_loadu_ps(w.scale.as_ptr().add(c0)),
                _mm512_cvtepi32_ps(_mm512_loadu_si512(w.colsum.as_ptr().add(c0) as *const _)),
            )
        };
        // K·α·β − α·colsum, and sd·scale, per column.
        let corr = _mm512_sub_ps(_mm512_mul_ps(kalpha, beta), _mm512_mul_ps(alpha, colsum));
        let factor = _mm512_mul_ps(sd, scale);
        let bias = match e.bias {
            // SAFETY: whole panels inside N, so 16 bias values from c0.
            Some(b) => unsafe { _mm512_loadu_ps(b.as_ptr().add(c0)) },
            None => _mm512_setzero_ps(),
        };
        for (i, row) in sums.iter().enumerate().take(mr) {
            // SAFETY: 16 i32s.
            let s = unsafe { _mm512_loadu_si512(row[j].as_ptr() as *const _) };
            let rs = _mm512_set1_ps(rowsum[r + i] as f32);
            let dot = _mm512_add_ps(
                _mm512_sub_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(beta, rs)),
                corr,
            );
            // Two roundings, as the portable epilogue and the unfused Add of the bias.
            let y = _mm512_add_ps(_mm512_mul_ps(factor, dot), bias);
            // SAFETY: row r + i, columns c0..c0+16 are inside dst.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add((r + i) * w.n + c0), y) };
        }
    }
}
