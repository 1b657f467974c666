//! f32 GEMM that reads both operands where they lie: `C (+)= A·B` with A `[m, k]` read
//! through a column map and B `[k, n]` row-major (any row pitch). Made for Convs some of
//! whose taps read only padding (Inception's 1×7 Convs on 3×3 maps, dilated Convs on small
//! maps): the column matrix holds the live taps only and the weights are read in place
//! through the map, where the `gemm` crate needed a compacted copy of the weights on every
//! call (a scalar gather costing more than the taps it saved: 207 → 121 µs on Inception's
//! `[192, 160, 1, 7]` Conv over `[2, 160, 3, 3]`). On whole-tap Convs the crate stays 3–5 %
//! faster (102 against 105 GFLOP/s on FCN's 3×3 head) and serves them.
//!
//! The AVX-512 kernel works on tiles of 8 rows of A by 48 columns of B: 24 accumulators
//! (8 rows × 3 vectors of 16 columns), per k three loads of B's row and eight broadcasts of
//! A's column, blocked over k and the columns for the caches (`rows_avx512`). Each output
//! is a chain of fused multiply-adds over each block of [`KC`] rows of k in order, from
//! zero, each block's sum then added to C, whatever tile it falls in and however rows are
//! split over threads, so the result does not depend on the thread count. On AVX2 the same
//! tiles run as sub-tiles of 4 rows by 24 columns (`tile_avx2`), with the same bits.
//! Elsewhere the `gemm` crate serves, over a compacted copy of A's mapped columns.
#[cfg(target_arch = "x86_64")]
pub(crate) use super::gemm_tile::{tile, tile_avx2, tile_fitted, Tile};
use super::lanes16::{lanes_isa, LanesIsa};
use super::matmul::{gemm_into_strided, MatView};
use super::KResult;
use rayon::prelude::*;

/// Multiply-adds below which one thread does the whole product while the pool's other
/// threads sleep ([`crate::split_min`]).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Rows of A per tile.
pub(crate) const MR: usize = 8;

/// Columns of B per panel (three 16-lane vectors).
pub(crate) const NR: usize = 48;

/// Rows of B per pass over A (one panel's block, `KC · NR` floats, is 24 KB: the L1 cache).
pub(crate) const KC: usize = 128;

/// Columns of B per pass over A (a block of `KC · NC` floats is 384 KB: the L2 cache).
const NC: usize = 768;

/// Rows of A from which B's panel blocks are copied into a contiguous buffer (below, the
/// copy costs more than the L1 misses it saves: DenseNet's 32-channel 3×3 Convs).
const PACK_MIN_ROWS: usize = 64;

thread_local! {
    /// Each thread's buffer for B's panel blocks ([`rows_blocked`]), kept between products.
    static PANEL_BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `c[i·ldc + j] = Σ_l a[i·lda + a_cols[l]] · b[l·ldb + j] + (accumulate ? c[i·ldc + j] : 0)`
/// for `i < m`, `j < n`, on the device's rayon threads when the product is large. `a_cols`
/// holds a Conv's live taps: its column matrix holds only the taps that read the input, and
/// the weights are read in place rather than compacted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_unpacked(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    a_cols: &[u32],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> KResult<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fits = |len: usize, rows: usize, ld: usize, cols: usize| {
        rows == 0 || cols == 0 || (ld >= cols && (rows - 1) * ld + cols <= len)
    };
    if a_cols.len() != k {
        return Err(format!(
            "{} column indices for a product over {k}",
            a_cols.len()
        ));
    }
    // Columns of A read: one past the largest mapped column.
    let a_width = a_cols.iter().map(|&v| v as usize + 1).max().unwrap_or(0);
    if !fits(a.len(), m, lda, a_width) || !fits(b.len(), k, ldb, n) || !fits(c.len(), m, ldc, n) {
        return Err(format!("gemm operands out of bounds for {m}x{k}·{k}x{n}"));
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(isa), true) = (lanes_isa(), k > 0) {
        // SAFETY: the CPU supports `isa` (lanes_isa checked it); the caller of `rows`
        // passes operands whose bounds were checked above.
        let rows = |dims, a: &[f32], c: &mut [f32]| unsafe {
            match isa {
                LanesIsa::Avx512 => rows_avx512(dims, a, lda, a_cols, b, ldb, c, ldc, accumulate),
                LanesIsa::Avx2 => rows_avx2(dims, a, lda, a_cols, b, ldb, c, ldc, accumulate),
            }
        };
        let threads = crate::pool_threads();
        let blocks = m.div_ceil(MR);
        if threads > 1 && blocks > 1 && m * n * k >= crate::split_min(PARALLEL_MIN_MACS) {
            // Whole blocks of MR rows per thread (several per thread, for balance).
            let per = blocks.div_ceil(threads * 2).max(1) * MR;
            let c = &mut c[..(m - 1) * ldc + n];
            c.par_chunks_mut(per * ldc).enumerate().for_each(|(t, ct)| {
                // Rows t·per.. of A and of C lie inside `a` and `ct` (bounds checked above
                // for all m rows).
                rows((per.min(m - t * per), n, k), &a[t * per * lda..], ct)
            });
        } else {
            rows((m, n, k), a, c);
        }
        return Ok(());
    }
    let compact: Vec<f32> = (0..m)
        .flat_map(|i| a_cols.iter().map(move |&v| a[i * lda + v as usize]))
        .collect();
    gemm_into_strided(
        m,
        n,
        k,
        c,
        (0, ldc, 1),
        MatView::row_major(&compact, 0, k),
        MatView::row_major(b, 0, ldb),
        1.0,
        accumulate,
    )
}

/// The product on AVX-512, blocked for the caches: per block of [`NC`] columns and [`KC`]
/// rows of B (copied into contiguous panels of [`NR`] columns when A has at least
/// [`PACK_MIN_ROWS`] rows, else read in place), every block of [`MR`] rows of A (its `MR ×
/// KC` block stays in the L1 cache) against every panel. A is read once per block of
/// columns: a Conv whose weights are tens of megabytes (FCN's 3×3 head, `[512, 18432]`)
/// against 128 columns reads them once, where panel-major order read them once per panel.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold rows `0..m` `lda` apart,
/// `b` rows `0..k` of `n` elements `ldb` apart, `c` rows `0..m` of `n` elements `ldc` apart;
/// `a_cols` holds `k` column indices inside A's rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx512(
    dims: (usize, usize, usize),
    a: &[f32],
    lda: usize,
    a_cols: &[u32],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    rows_blocked::<true>(dims, a, lda, a_cols, b, ldb, c, ldc, accumulate)
}

/// [`rows_avx512`] on AVX2 ([`tile_avx2`]).
///
/// # Safety
/// The CPU must support AVX2 and FMA; the operands as for [`rows_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(
    dims: (usize, usize, usize),
    a: &[f32],
    lda: usize,
    a_cols: &[u32],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    rows_blocked::<false>(dims, a, lda, a_cols, b, ldb, c, ldc, accumulate)
}

/// The body of [`rows_avx512`] (`AVX512`) and [`rows_avx2`].
///
/// # Safety
/// As for the wrapper of the instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_blocked<const AVX512: bool>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    a_cols: &[u32],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (pa, pc) = (a.as_ptr(), c.as_mut_ptr());
    // Few row blocks read each panel block a few times only: B is then read in place.
    let packed = m >= PACK_MIN_ROWS;
    // The thread's block buffer, grown (and zeroed) only when a product needs more: a fresh
    // zeroed `KC · NC` block per call cost as much as a small product (a 1×1 Conv's 96 ×
    // 24 × 480 ran at 25 GFLOP/s).
    let mut block = PANEL_BLOCK.with(|b| b.take());
    if packed {
        let need = k.min(KC) * n.min(NC).div_ceil(NR) * NR;
        if block.len() < need {
            block.resize(need, 0.0);
        }
    }
    // Rows of B per panel in the block buffer.
    let kstep = k.min(KC);
    for jc in (0..n).step_by(NC) {
        let nc = (n - jc).min(NC);
        for k0 in (0..k).step_by(KC) {
            let kc = (k - k0).min(KC);
            if packed {
                // Panel p of the block: kc rows of NR floats at p·kstep·NR.
                for (p, j0) in (jc..jc + nc).step_by(NR).enumerate() {
                    let cols = (jc + nc - j0).min(NR);
                    let panel = &mut block[p * kstep * NR..][..kc * NR];
                    for (l, row) in panel.chunks_exact_mut(NR).enumerate() {
                        row[..cols].copy_from_slice(&b[(k0 + l) * ldb + j0..][..cols]);
                    }
                }
            }
            // A from its row start, the map from k0.
            let map = a_cols.as_ptr().add(k0);
            for i0 in (0..m).step_by(MR) {
                for (p, j0) in (jc..jc + nc).step_by(NR).enumerate() {
                    let cols = (jc + nc - j0).min(NR);
                    let (bp, brs) = if packed {
                        (block.as_ptr().add(p * kstep * NR), NR)
                    } else {
                        (b.as_ptr().add(k0 * ldb + j0), ldb)
                    };
                    let rows = (m - i0).min(MR);
                    let geo = Tile {
                        k: kc,
                        arows: std::array::from_fn(|r| pa.add((i0 + r.min(rows - 1)) * lda)),
                        map,
                        rows,
                        b: bp,
                        ldb: brs,
                        c: pc.add(i0 * ldc + j0),
                        ldc,
                        cols,
                        load: accumulate || k0 > 0,
                        prefetch: false,
                    };
                    // SAFETY (all arms): the tile's rows i0.. and columns j0..j0 + cols lie
                    // inside A and C by this function's contract, its kc rows in B or in
                    // the packed block.
                    match (AVX512, cols.div_ceil(16)) {
                        (false, _) => tile_avx2(&geo),
                        (true, 3) => tile::<3>(&geo),
                        (true, 2) => tile::<2>(&geo),
                        _ => tile::<1>(&geo),
                    }
                }
            }
        }
    }
    PANEL_BLOCK.with(|b| b.replace(block));
}

#[cfg(test)]
mod tests {
    use super::gemm_unpacked;

    /// The map that reads A's first k columns in order.
    fn identity(k: usize) -> Vec<u32> {
        (0..k as u32).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Every edge (rows and columns past whole tiles, pitches wider than the rows, k = 0;
    /// B read in place and, from 64 rows, in copied blocks; several blocks of k and of
    /// columns) against a direct triple loop in f64, with and without accumulation.
    #[test]
    fn products_match_a_direct_loop() {
        for (m, n, k) in [
            (1, 1, 1),
            (8, 48, 16),
            (13, 50, 7),
            (3, 17, 100),
            (20, 97, 33),
            (9, 5, 0),
            (70, 50, 300),
            (70, 800, 140),
            (20, 790, 10),
            (13, 64, 9),
            (70, 56, 130),
        ] {
            for (pad, accumulate) in [(0, false), (3, true)] {
                let (lda, ldb, ldc) = (k + pad, n + pad, n + 2 * pad);
                let a = values(m * lda, 1);
                let b = values(k.max(1) * ldb, 2);
                let c0 = values(m * ldc, 3);
                let mut c = c0.clone();
                let map = identity(k);
                gemm_unpacked((m, n, k), &a, lda, &map, &b, ldb, &mut c, ldc, accumulate).unwrap();
                for i in 0..m {
                    for j in 0..ldc {
                        let want = if j >= n {
                            c0[i * ldc + j] as f64
                        } else {
                            let s: f64 = (0..k)
                                .map(|l| a[i * lda + l] as f64 * b[l * ldb + j] as f64)
                                .sum();
                            s + if accumulate {
                                c0[i * ldc + j] as f64
                            } else {
                                0.0
                            }
                        };
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 tiles give the AVX-512 tiles' bits (edges of rows and columns, B in place
    /// and in copied blocks, several blocks of k), where the CPU has both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_tiles_give_the_avx512_bits() {
        if crate::lanes16::lanes_isa() != Some(crate::lanes16::LanesIsa::Avx512) {
            eprintln!("skipped: needs AVX-512F (and AVX2) to compare the two");
            return;
        }
        for (m, n, k) in [(13, 50, 7), (70, 97, 300), (9, 20, 129)] {
            let (a, b, c0) = (values(m * k, 7), values(k * n, 8), values(m * n, 9));
            let map = identity(k);
            let (mut wide, mut narrow) = (c0.clone(), c0.clone());
            // SAFETY: the CPU has AVX-512F and AVX2 (checked above); the operands are
            // dense [m, k], [k, n] and [m, n] matrices.
            unsafe {
                super::rows_avx512((m, n, k), &a, k, &map, &b, n, &mut wide, n, true);
                super::rows_avx2((m, n, k), &a, k, &map, &b, n, &mut narrow, n, true);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "{m}x{n}x{k}");
        }
    }

    #[test]
    fn rows_split_over_threads_give_the_same_bits() {
        let (m, n, k) = (64, 100, 400);
        let (a, b, map) = (values(m * k, 4), values(k * n, 5), identity(k));
        let mut one = vec![0f32; m * n];
        gemm_unpacked((m, n, k), &a, k, &map, &b, n, &mut one, n, false).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut three = vec![0f32; m * n];
        pool.install(|| {
            gemm_unpacked((m, n, k), &a, k, &map, &b, n, &mut three, n, false).unwrap()
        });
        assert_eq!(one, three);
    }

    /// Mapped columns of A equal the product with A's columns copied out first.
    #[test]
    fn mapped_columns_match_a_compacted_copy() {
        let (m, n, lda) = (11, 40, 30);
        let map: Vec<u32> = (0..lda as u32).filter(|v| v % 3 != 1).collect();
        let k = map.len();
        let (a, b) = (values(m * lda, 6), values(k * n, 7));
        let compact: Vec<f32> = (0..m)
            .flat_map(|i| map.iter().map(move |&v| (i, v as usize)))
            .map(|(i, v)| a[i * lda + v])
            .collect();
        let mut want = vec![0f32; m * n];
        gemm_unpacked(
            (m, n, k),
            &compact,
            k,
            &identity(k),
            &b,
            n,
            &mut want,
            n,
            false,
        )
        .unwrap();
        let mut got = vec![0f32; m * n];
        gemm_unpacked((m, n, k), &a, lda, &map, &b, n, &mut got, n, false).unwrap();
        assert_eq!(got, want);
        let short = &map[..k - 1];
        assert!(gemm_unpacked((m, n, k), &a, lda, short, &b, n, &mut got, n, false).is_err());
    }

    #[test]
    fn operands_out_of_bounds_are_an_error() {
        let mut c = vec![0f32; 4];
        assert!(gemm_unpacked(
            (2, 2, 3),
            &[0.0; 5],
            3,
            &identity(3),
            &[0.0; 6],
            2,
            &mut c,
            2,
            false
        )
        .is_err());
    }

    /// A block of k is summed before it meets C: with C = 2^24 (an ulp of 2) each product
    /// 0.75 alone would round away, their block sum 96 per block does not. (A chain from
    /// C's value, as before, returned 2^24.)
    #[test]
    fn each_block_of_k_is_summed_before_it_is_added_to_c() {
        for k in [super::KC, 3 * super::KC] {
            let (m, n) = (9, 33);
            let a = vec![1.0f32; m * k];
            let b = vec![0.75f32; k * n];
            let mut c = vec![16_777_216.0f32; m * n];
            let map = identity(k);
            gemm_unpacked((m, n, k), &a, k, &map, &b, n, &mut c, n, true).unwrap();
            let want = 16_777_216.0 + 0.75 * k as f32;
            if crate::conv_direct::direct_available() {
                assert!(c.iter().all(|&v| v == want), "k {k}: {} != {want}", c[0]);
            } else {
                eprintln!("skipped: the unpacked kernel needs AVX-512F or AVX2");
            }
        }
    }
}
