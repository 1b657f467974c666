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
        for &(m, n, k) in &[(1, 3, 5), (8, 37, 576), (16, 9, 17), (3, 1, 1)] {
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

    /// Rows computed four at a time give the bits of rows computed alone.
    #[test]
    fn blocked_rows_equal_single_rows_bitwise() {
        let (m, n, k) = (9, 5, 37);
        let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|v| (v as f32 * 0.11).cos()).collect();
        let mut all = vec![0f32; m * n];
        a_bt((m, n, k), &a, &b, 0.5, false, &mut all).expect("in bounds");
        for i in 0..m {
            let mut one = vec![0f32; n];
            a_bt((1, n, k), &a[i * k..], &b, 0.5, false, &mut one).expect("in bounds");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&all[i * n..(i + 1) * n]), bits(&one), "row {i}");
        }
    }
}
