//! A·Bᵀ for a few rows of A (a classifier's Gemm on a small batch: `[8, 576] · [1024, 576]ᵀ`):
//! every row of B is read once, contiguously, and dotted with the few rows of A, which stay
//! in cache. The `gemm` crate instead packs the whole of B (megabytes of weights) on every
//! call, which costs more than the arithmetic when A has a handful of rows.
use super::simd::vectorized;
use super::KResult;

/// Rows of A up to which [`a_bt`] is used.
pub(crate) const NARROW_ROWS: usize = 16;

/// Lanes of the partial sums (two AVX registers, or one AVX-512 register).
const LANES: usize = 16;

/// `out[i·n + j] = alpha · Σ_l a[i·k + l] · b[j·k + l] + (accumulate ? out[i·n + j] : 0)`
/// for `i < m`, `j < n` (A `[m, k]` and B `[n, k]` row-major).
pub(crate) fn a_bt(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    alpha: f32,
    accumulate: bool,
    out: &mut [f32],
) -> KResult<()> {
    if a.len() < m * k || b.len() < n * k || out.len() < m * n {
        return Err(format!(
            "narrow gemm operands out of bounds for {m}x{k}·({n}x{k})ᵀ"
        ));
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above); the operand lengths were
        // checked above (a: m·k, b: n·k, out: m·n elements).
        unsafe { a_bt_avx512((m, n, k), a, b, alpha, accumulate, out) };
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); the operand lengths
        // were checked above.
        unsafe { a_bt_avx2((m, n, k), a, b, alpha, accumulate, out) };
        return Ok(());
    }
    vectorized(
        #[inline(always)]
        || {
            let mut put = |i: usize, j: usize, d: f32| {
                let v = alpha * d;
                let o = &mut out[i * n + j];
                *o = if accumulate { *o + v } else { v };
            };
            for j in 0..n {
                let brow = &b[j * k..(j + 1) * k];
                let row = |i: usize| &a[i * k..(i + 1) * k];
                // Four rows of A per load of B's row: four independent accumulators
                // instead of one chain that waits on its own previous add.
                let mut i = 0;
                while i + 4 <= m {
                    let d = dot4([row(i), row(i + 1), row(i + 2), row(i + 3)], brow);
                    for (r, dv) in d.into_iter().enumerate() {
                        put(i + r, j, dv);
                    }
                    i += 4;
                }
                for i in i..m {
                    put(i, j, dot(row(i), brow));
                }
            }
        },
    );
    Ok(())
}

/// [`a_bt`] on AVX2 without AVX-512: tiles of up to 2 rows of A by 4 rows of B with one
/// 8-lane FMA accumulator per output (eight independent chains; masked loads for the last
/// chunk of k), so each chunk of B's rows is loaded once per 2 rows of A. One row of A
/// against one row of B at a time (the loop below, vectorised for the baseline) ran
/// MobileNet-V3's classifier `[2, 1024] · [1000, 1024]ᵀ` 10x slower on an AVX2 core. An
/// output's sum runs over k in the same order whatever tile it falls in.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold `m·k`, `b` `n·k` and `out` `m·n`
/// elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn a_bt_avx2(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    alpha: f32,
    accumulate: bool,
    out: &mut [f32],
) {
    tiles((m, n), 2, alpha, accumulate, out, |i, j, mr, nr| {
        let mut tile = [[0f32; 4]; 4];
        match (mr, nr) {
            (2, 4) => tile[..2].copy_from_slice(&tile_avx2::<2, 4>(a, b, (i, j, k))),
            (1, 4) => tile[0] = tile_avx2::<1, 4>(a, b, (i, j, k))[0],
            _ => {
                for (r, row) in tile.iter_mut().enumerate().take(mr) {
                    for (c, v) in row.iter_mut().enumerate().take(nr) {
                        *v = tile_avx2::<1, 1>(a, b, (i + r, j + c, k))[0][0];
                    }
                }
            }
        }
        tile
    });
}

/// The `MR × NR` dot products of rows `i..i + MR` of A with rows `j..j + NR` of B on AVX2:
/// 8-lane FMA chains over k in order (the last chunk by masked loads, zeros beyond k),
/// then the lanes summed in a fixed order.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the rows must lie within `a` and `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2<const MR: usize, const NR: usize>(
    a: &[f32],
    b: &[f32],
    (i, j, k): (usize, usize, usize),
) -> [[f32; NR]; MR] {
    use std::arch::x86_64::{
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_setr_epi32, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let (pa, pb) = (a.as_ptr().add(i * k), b.as_ptr().add(j * k));
    let full = k / 8 * 8;
    let mut l = 0;
    while l < full {
        // SAFETY (caller's contract): elements l .. l + 8 <= k of every row lie within it.
        let bv: [_; NR] = std::array::from_fn(|c| _mm256_loadu_ps(pb.add(c * k + l)));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_ps(pa.add(r * k + l));
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(av, bv[c], *v);
            }
        }
        l += 8;
    }
    if l < k {
        let left = (k - l) as i32;
        // Lanes below `left` are loaded (sign bit set), the rest read as 0.
        let lane = |x: i32| if x < left { -1 } else { 0 };
        let mask = _mm256_setr_epi32(
            lane(0),
            lane(1),
            lane(2),
            lane(3),
            lane(4),
            lane(5),
            lane(6),
            lane(7),
        );
        // SAFETY (caller's contract): the unmasked lanes l .. k of every row lie within it;
        // masked-off lanes are not read.
        let bv: [_; NR] = std::array::from_fn(|c| _mm256_maskload_ps(pb.add(c * k + l), mask));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_maskload_ps(pa.add(r * k + l), mask);
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(av, bv[c], *v);
            }
        }
    }
    let mut res = [[0f32; NR]; MR];
    for (res_r, acc_r) in res.iter_mut().zip(&acc) {
        for (v, x) in res_r.iter_mut().zip(acc_r) {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            _mm256_storeu_ps(lanes.as_mut_ptr(), *x);
            *v = lanes.iter().sum();
        }
    }
    res
}

/// [`a_bt`] on AVX-512: tiles of up to 4 rows of A by 4 rows of B, whose 16 dot products
/// are 16 vector accumulators (one fused multiply-add per 16 products; the last partial
/// chunk of k by masked loads), so each chunk of B's rows is loaded once per 4 rows of A
/// and each chunk of A's rows once per 4 rows of B. An output's sum runs over k in the
/// same order whatever tile it falls in.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold `m·k`, `b` `n·k` and `out` `m·n` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn a_bt_avx512(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    alpha: f32,
    accumulate: bool,
    out: &mut [f32],
) {
    tiles((m, n), 4, alpha, accumulate, out, |i, j, mr, nr| {
        // Edge tiles: the same arithmetic per output, by rows of A (four rows of B each,
        // four independent accumulators) or one output at a time.
        let mut tile = [[0f32; 4]; 4];
        match (mr, nr) {
            (4, 4) => tile = tile_avx512::<4, 4>(a, b, (i, j, k)),
            // Fewer rows of A (a classifier on a batch of 2 or 3): every row against each
            // chunk of B's four rows while it is loaded, so B (the weights, in the L3
            // cache or memory) is read once, not once per row of A.
            (3, 4) => tile[..3].copy_from_slice(&tile_avx512::<3, 4>(a, b, (i, j, k))),
            (2, 4) => tile[..2].copy_from_slice(&tile_avx512::<2, 4>(a, b, (i, j, k))),
            (_, 4) => tile[0] = tile_avx512::<1, 4>(a, b, (i, j, k))[0],
            _ => {
                for (r, row) in tile.iter_mut().enumerate().take(mr) {
                    for (c, v) in row.iter_mut().enumerate().take(nr) {
                        *v = tile_avx512::<1, 1>(a, b, (i + r, j + c, k))[0][0];
                    }
                }
            }
        }
        tile
    });
}

/// Writes `alpha · d (+ out)` for every output of `out[m × n]`, the dot products `d` coming
/// tile by tile from `tile(i, j, mr, nr)`: rows `i..i + mr` of A (at most `rows`) by rows
/// `j..j + nr` of B (at most 4). The larger operand is streamed once, in the outer loop;
/// the smaller one's rows are read again for each of its blocks, from the cache (a Conv's
/// weights as A against a few columns as B: reading all of A per block of four columns
/// read 8 MB of weights twice from memory on ResNeXt's late 1×1 Convs).
#[inline(always)]
fn tiles(
    (m, n): (usize, usize),
    rows: usize,
    alpha: f32,
    accumulate: bool,
    out: &mut [f32],
    mut tile: impl FnMut(usize, usize, usize, usize) -> [[f32; 4]; 4],
) {
    let mut tile_at = |i: usize, j: usize| {
        let (mr, nr) = ((m - i).min(rows), (n - j).min(4));
        let t = tile(i, j, mr, nr);
        for (r, row) in t.iter().enumerate().take(mr) {
            for (c, &d) in row.iter().enumerate().take(nr) {
                let o = &mut out[(i + r) * n + j + c];
                let v = alpha * d;
                *o = if accumulate { *o + v } else { v };
            }
        }
    };
    if m > n {
        for i in (0..m).step_by(rows) {
            for j in (0..n).step_by(4) {
                tile_at(i, j);
            }
        }
    } else {
        for j in (0..n).step_by(4) {
            for i in (0..m).step_by(rows) {
                tile_at(i, j);
            }
        }
    }
}

/// The `MR × NR` dot products of rows `i..i + MR` of A with rows `j..j + NR` of B (all
/// `k` long), each a sum of 16 lane sums.
///
/// # Safety
/// The CPU must support AVX-512F; the rows must lie within `a` and `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_avx512<const MR: usize, const NR: usize>(
    a: &[f32],
    b: &[f32],
    (i, j, k): (usize, usize, usize),
) -> [[f32; NR]; MR] {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps,
    };
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let (pa, pb) = (a.as_ptr().add(i * k), b.as_ptr().add(j * k));
    let mut l = 0;
    while l < k {
        let mask = crate::simd::lane_mask(k - l);
        // SAFETY (caller's contract): elements l .. l + popcount(mask) of every row lie
        // within its k elements; masked-off lanes are not read.
        let bv: [_; NR] = std::array::from_fn(|c| _mm512_maskz_loadu_ps(mask, pb.add(c * k + l)));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_maskz_loadu_ps(mask, pa.add(r * k + l));
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm512_fmadd_ps(av, bv[c], *v);
            }
        }
        l += 16;
    }
    let mut res = [[0f32; NR]; MR];
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            res[r][c] = _mm512_reduce_add_ps(*v);
        }
    }
    res
}

/// Four [`dot`]s against one `y`, each with exactly [`dot`]'s arithmetic.
#[inline(always)]
fn dot4([x0, x1, x2, x3]: [&[f32]; 4], y: &[f32]) -> [f32; 4] {
    let (mut c0, mut c1, mut c2, mut c3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let full = y.len() / LANES * LANES;
    let chunks = y[..full]
        .chunks_exact(LANES)
        .zip(x0.chunks_exact(LANES))
        .zip(x1.chunks_exact(LANES))
        .zip(x2.chunks_exact(LANES))
        .zip(x3.chunks_exact(LANES));
    for ((((ys, a0), a1), a2), a3) in chunks {
        for l in 0..LANES {
            c0[l] += a0[l] * ys[l];
            c1[l] += a1[l] * ys[l];
            c2[l] += a2[l] * ys[l];
            c3[l] += a3[l] * ys[l];
        }
    }
    let fin = |c: &[f32; LANES], x: &[f32]| {
        let mut s: f32 = c.iter().sum();
        for (a, b) in x[full..].iter().zip(&y[full..]) {
            s += a * b;
        }
        s
    };
    [fin(&c0, x0), fin(&c1, x1), fin(&c2, x2), fin(&c3, x3)]
}

/// Dot product with `LANES` independent partial sums (vectorised by the caller's target
/// features), then the tail.
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += xs[l] * ys[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::a_bt;

    #[test]
    fn matches_plain_triple_loop() {
        for &(m, n, k) in &[
            (1, 3, 5),
            (8, 37, 576),
            (16, 9, 17),
            (3, 1, 1),
            (6, 8, 33),
            (1, 12, 40),
            (2, 9, 100),
            (3, 6, 20),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|v| ((v * 7 % 13) as f32 - 6.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n * k)
                .map(|v| ((v * 5 % 11) as f32 - 5.0) / 9.0)
                .collect();
            let mut out = vec![0.5f32; m * n];
            a_bt((m, n, k), &a, &b, 1.5, true, &mut out).expect("in bounds");
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = 0.5
                        + 1.5
                            * (0..k)
                                .map(|l| a[i * k + l] as f64 * b[j * k + l] as f64)
                                .sum::<f64>();
                    let d = (out[i * n + j] as f64 - want).abs();
                    assert!(d < 1e-4 * (1.0 + want.abs()), "{m}x{n}x{k} ({i},{j}): {d}");
                }
            }
        }
        assert!(a_bt((2, 2, 2), &[0.0; 3], &[0.0; 4], 1.0, false, &mut [0.0; 4]).is_err());
    }

    /// Rows computed four, three or two at a time give the bits of rows computed alone.
    #[test]
    fn blocked_rows_equal_single_rows_bitwise() {
        for m in [9, 10, 7, 2, 3] {
            let (n, k) = (5, 37);
            let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n * k).map(|v| (v as f32 * 0.11).cos()).collect();
            let mut all = vec![0f32; m * n];
            a_bt((m, n, k), &a, &b, 0.5, false, &mut all).expect("in bounds");
            for i in 0..m {
                let mut one = vec![0f32; n];
                a_bt((1, n, k), &a[i * k..], &b, 0.5, false, &mut one).expect("in bounds");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&all[i * n..(i + 1) * n]),
                    bits(&one),
                    "{m} rows: row {i}"
                );
            }
        }
    }
}
