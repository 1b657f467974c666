//! The register tiles of the unpacked GEMM (`gemm_unpacked.rs`), shared by the direct Conv
//! (`conv_direct.rs`) and the packed MatMul (`matmul_packed.rs`): up to [`MR`] rows of A by
//! 48 columns of B, AVX-512 ([`tile`], [`tile_fitted`]) or AVX2 and FMA ([`tile_avx2`]),
//! with the same chain of fused multiply-adds per output on both.
use super::gemm_unpacked::MR;

/// One tile of at most [`MR`] rows and `16·NV` columns.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tile {
    pub k: usize,
    /// The start of each of A's rows (rows past `rows` repeat the last one).
    pub arows: [*const f32; MR],
    /// Column indices into A's rows, one per k.
    pub map: *const u32,
    pub rows: usize,
    pub b: *const f32,
    /// B's row pitch ([`NR`](super::gemm_unpacked::NR) in a panel block).
    pub ldb: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    /// Add the tile's sum to C's values (else overwrite them).
    pub load: bool,
    /// Prefetch B's rows ahead (B streams from memory: a Conv of few positions).
    pub prefetch: bool,
}

/// `C[rows, cols] = (load ? C : 0) + A[rows, k] · B[k, cols]` for one tile (A's column for
/// k = l is `map[l]`): `NV` vectors of 16 columns (the last masked to `cols`), [`MR`] rows
/// of accumulators (rows past `rows` repeat the last row of A and are not stored). The
/// product is summed from zero and then added to C: a long product is a sum of blocks of
/// at most [`KC`] (a chain of 2048 from C's value took an SE block's `[128, 2048]` Conv on
/// MaxViT 4× further from a float64 reference than onnxruntime's).
///
/// # Safety
/// The CPU must support AVX-512F; `map + l` and `arows[i] + map[l]` (i < MR, l < k),
/// `b + l·ldb + j` and `c + i·ldc + j` (j < cols) must be valid, and
/// `16·(NV − 1) < cols ≤ 16·NV`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn tile<const NV: usize>(t: &Tile) {
    // SAFETY: this function's contract.
    unsafe { tile_rows::<NV, MR>(t) }
}

/// [`tile`] with `R` rows of accumulators (`t.rows <= R <= MR`; rows of A read up to `R`):
/// a tile of fewer rows than [`MR`] (a product of two rows) does no work for rows it does
/// not store. The same chain per output as [`tile`].
///
/// # Safety
/// As [`tile`], with `arows[i]` valid for i < R.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn tile_rows<const NV: usize, const R: usize>(t: &Tile) {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm_prefetch, _MM_HINT_T0,
    };
    let masks: [u16; NV] =
        std::array::from_fn(|v| crate::simd::lane_mask(t.cols.saturating_sub(16 * v)));
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for l in 0..t.k {
        // SAFETY: lanes below `cols` of B's row l lie inside B (caller's contract); masked-off
        // lanes are not read.
        let bp = t.b.add(l * t.ldb);
        if t.prefetch {
            // Eight rows ahead (a hint: no fault past the end of B).
            let ahead = bp.wrapping_add(8 * t.ldb) as *const i8;
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * v));
            }
        }
        let bv: [_; NV] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v)));
        // SAFETY: entry l of the map, inside it (caller's contract).
        let col = *t.map.add(l) as usize;
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: column `col` of row r of A, inside A (caller's contract).
            let av = _mm512_set1_ps(*t.arows[r].add(col));
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(av, bv[v], *x);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        for (v, x) in row.iter().enumerate() {
            let at = t.c.add(r * t.ldc + 16 * v);
            // SAFETY: lanes below `cols` of C's row r, inside C; masked-off lanes are
            // neither read nor written.
            let sum = if t.load {
                _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), *x)
            } else {
                *x
            };
            _mm512_mask_storeu_ps(at, masks[v], sum);
        }
    }
}

/// [`tile`] with as many rows of accumulators as the tile has rows, up to four, else [`MR`]
/// (a packed `Gemm` of two rows by a `[1000, 1024]` weight, one thread: 148 → 61 µs,
/// onnxruntime 60; the last block of a direct Conv over few positions).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_fitted<const NV: usize>(t: &Tile) {
    // SAFETY (all): this function's contract; t.rows <= R in each arm.
    unsafe {
        match t.rows {
            1 => tile_rows::<NV, 1>(t),
            2 => tile_rows::<NV, 2>(t),
            3 => tile_rows::<NV, 3>(t),
            4 => tile_rows::<NV, 4>(t),
            _ => tile_rows::<NV, MR>(t),
        }
    }
}

/// [`tile`] on AVX2 (any `cols` up to [`NR`](super::gemm_unpacked::NR)): sub-tiles of 4 rows by 24 columns (12
/// accumulators of 8 lanes, three loads of B's row and four broadcasts of A's column per
/// k), the last vector of a row masked. Each output is the same chain of fused
/// multiply-adds as in [`tile`], so the two give the same bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the operands as for [`tile`], with `cols ≤ NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile_avx2(t: &Tile) {
    for r0 in (0..t.rows).step_by(4) {
        let mut c0 = 0;
        while c0 < t.cols {
            // A tail of exactly 16 or 8 columns (64 channels are a panel of 48 and one of
            // 16) reads B unmasked, as whole sub-tiles do: 1-4 % on the direct 3×3 Convs
            // of 32-512 channels, alone, in quiet rounds. 32 columns go as two sub-tiles
            // of 16, not 24 and 8: a 4×8 sub-tile has 4 accumulators, too few to hide the
            // FMA latency (direct 3×3 Convs alone, three alternating rounds: 32 channels
            // over 112×112 65 → 70 GFLOP/s, 128 over 28×28 81 → 83.5).
            c0 += match t.cols - c0 {
                32 => sub_tile_avx2::<2, true>(t, r0, c0),
                24.. => sub_tile_avx2::<3, true>(t, r0, c0),
                17..24 => sub_tile_avx2::<3, false>(t, r0, c0),
                16 => sub_tile_avx2::<2, true>(t, r0, c0),
                9..16 => sub_tile_avx2::<2, false>(t, r0, c0),
                8 => sub_tile_avx2::<1, true>(t, r0, c0),
                _ => sub_tile_avx2::<1, false>(t, r0, c0),
            };
        }
    }
}

/// Rows `r0..r0 + 4` (those below `t.rows`) and columns `c0..c0 + 8·NV` (those below
/// `t.cols`; all of them when `FULL`: B's rows are then read without masks) of
/// [`tile_avx2`]; returns the columns it spans, `8·NV`.
///
/// # Safety
/// As for [`tile_avx2`]; `r0 < t.rows`, `c0 < t.cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sub_tile_avx2<const NV: usize, const FULL: bool>(
    t: &Tile,
    r0: usize,
    c0: usize,
) -> usize {
    use std::arch::x86_64::*;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks: [__m256i; NV] = std::array::from_fn(|v| {
        let n = t.cols.saturating_sub(c0 + 8 * v).min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes)
    });
    let rows = (t.rows - r0).min(4);
    // Rows past `rows` repeat the last one (not stored).
    let arows: [*const f32; 4] = std::array::from_fn(|r| t.arows[r0 + r.min(rows - 1)]);
    let mut acc = [[_mm256_setzero_ps(); NV]; 4];
    for l in 0..t.k {
        // SAFETY: lanes below `cols` of B's row l lie inside B (caller's contract);
        // masked-off lanes are not read.
        let bp = t.b.add(l * t.ldb + c0);
        if t.prefetch {
            // Eight rows ahead (a hint: no fault past the end of B).
            let ahead = bp.wrapping_add(8 * t.ldb) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        }
        let bv: [__m256; NV] = std::array::from_fn(|v| match FULL {
            true => _mm256_loadu_ps(bp.add(8 * v)),
            false => _mm256_maskload_ps(bp.add(8 * v), masks[v]),
        });
        // SAFETY: entry l of the map, inside it (caller's contract).
        let col = *t.map.add(l) as usize;
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: column `col` of row r of A, inside A (caller's contract).
            let av = _mm256_set1_ps(*arows[r].add(col));
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm256_fmadd_ps(av, bv[v], *x);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        for (v, x) in row.iter().enumerate() {
            let at = t.c.add((r0 + r) * t.ldc + c0 + 8 * v);
            // Whole vectors are stored unmasked: a masked store is microcoded on AMD's cores
            // (the twelve of a 4×24 sub-tile cost as much as its 24 steps of k).
            let whole = FULL || c0 + 8 * (v + 1) <= t.cols;
            // SAFETY: lanes below `cols` of C's row r0 + r, inside C (all eight when
            // `whole`); masked-off lanes are neither read nor written.
            match (whole, t.load) {
                (true, true) => _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), *x)),
                (true, false) => _mm256_storeu_ps(at, *x),
                (false, true) => {
                    let sum = _mm256_add_ps(_mm256_maskload_ps(at, masks[v]), *x);
                    _mm256_maskstore_ps(at, masks[v], sum)
                }
                (false, false) => _mm256_maskstore_ps(at, masks[v], *x),
            }
        }
    }
    8 * NV
}
