//! `C (+)= A·B` where B has at most 16 columns and A many rows, on AVX2: a Conv's weights
//! `[M, C]` times a few output positions (1×1 Convs on the 2×2 maps of two images: 8
//! columns). Each row of C is one or two 8-lane accumulators; per k, one load of B's row
//! (copied once into rows padded to whole vectors) and one broadcast of A's element per
//! row of the block, so every output is one chain of fused multiply-adds over k in order,
//! with no horizontal sums. The dot-product kernel (`matmul_narrow.rs`, A·Bᵀ against the
//! transposed columns) spends as much on summing the lanes of each output as on its
//! multiply-adds when k is a few dozen: on an AVX2 EPYC core the 1×1 Conv `[576, 96]` over
//! two 2×2 maps takes 26 µs here against 38 there, `[288, 48]` 10 against 17.
use super::lanes16::{lanes_isa, LanesIsa};
use super::KResult;

/// Columns of B up to which [`ab_few_cols`] serves a product.
pub(crate) const FEW_COLS: usize = 16;

/// True where [`ab_few_cols`] runs: AVX2 with FMA and no AVX-512F (with AVX-512 the
/// dot-product kernel's 16-lane tiles were measured the faster).
pub(crate) fn few_cols_available() -> bool {
    lanes_isa() == Some(LanesIsa::Avx2)
}

/// `out[i·n + j] = Σ_l a[i·k + l] · b[l·ldb + j] + (accumulate ? out[i·n + j] : 0)` for
/// `i < m`, `j < n ≤ FEW_COLS`. Only where [`few_cols_available`] holds.
pub(crate) fn ab_few_cols(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    ldb: usize,
    out: &mut [f32],
    accumulate: bool,
) -> KResult<()> {
    if n == 0 || n > FEW_COLS || !few_cols_available() {
        return Err(format!(
            "the few-column product does not serve {n} columns here"
        ));
    }
    if a.len() < m * k || out.len() < m * n || (k > 0 && (ldb < n || b.len() < (k - 1) * ldb + n)) {
        return Err(format!(
            "few-column operands out of bounds for {m}x{k}·{k}x{n}"
        ));
    }
    // B's rows padded with zeros to whole vectors (8 or 16 lanes).
    let width = if n <= 8 { 8 } else { 16 };
    let mut bp = vec![0f32; k * width];
    for (l, row) in bp.chunks_exact_mut(width).enumerate() {
        row[..n].copy_from_slice(&b[l * ldb..][..n]);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: few_cols_available checked AVX2 and FMA; `a` holds m·k elements, `bp` k rows
    // of `width`, `out` m·n (checked above).
    unsafe {
        match width {
            8 => rows_avx2::<1, 12>((m, n, k), a, &bp, out, accumulate),
            _ => rows_avx2::<2, 6>((m, n, k), a, &bp, out, accumulate),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("few_cols_available is false off x86-64 ({width})");
    Ok(())
}

/// Blocks of `R` rows of A against all of `bp` (`[k, 8·V]`): `R × V` accumulators.
///
/// # Safety
/// AVX2 and FMA; `a` holds `m·k` elements, `bp` `k·8·V`, `out` `m·n` with `n ≤ 8·V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const V: usize, const R: usize>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    bp: &[f32],
    out: &mut [f32],
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let (pa, pb) = (a.as_ptr(), bp.as_ptr());
    for i0 in (0..m).step_by(R) {
        let rows = (m - i0).min(R);
        // Rows past `rows` repeat the last one (computed, not stored).
        let arow: [*const f32; R] = std::array::from_fn(|r| pa.add((i0 + r.min(rows - 1)) * k));
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for l in 0..k {
            // SAFETY: row l of `bp` holds 8·V floats; element l of each row of A lies
            // inside `a` (the caller's contract).
            let bv: [__m256; V] =
                std::array::from_fn(|v| _mm256_loadu_ps(pb.add(l * 8 * V + 8 * v)));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*arow[r].add(l));
                for (x, &bvv) in accr.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(av, bvv, *x);
                }
            }
        }
        for (r, accr) in acc.iter().enumerate().take(rows) {
            let mut lanes = [[0f32; 8]; V];
            for (dst, x) in lanes.iter_mut().zip(accr) {
                // SAFETY: `dst` holds 8 floats.
                _mm256_storeu_ps(dst.as_mut_ptr(), *x);
            }
            let dst = &mut out[(i0 + r) * n..][..n];
            for (j, o) in dst.iter_mut().enumerate() {
                let d = lanes[j / 8][j % 8];
                *o = if accumulate { *o + d } else { d };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ab_few_cols, few_cols_available};

    /// Products of 1 to 16 columns, blocks of rows with a partial last one, B rows wider
    /// than its columns, with and without accumulation, against an f64 triple loop.
    #[test]
    fn products_match_a_direct_loop() {
        if !few_cols_available() {
            eprintln!("skipped: the few-column product runs on AVX2 without AVX-512");
            return;
        }
        let value = |i: usize, s: usize| ((i * 2654435761 + s) % 1000) as f32 / 500.0 - 1.0;
        for (m, n, k) in [
            (1, 1, 1),
            (13, 8, 96),
            (25, 5, 7),
            (576, 16, 96),
            (7, 11, 0),
        ] {
            for (ldb, accumulate) in [(n, false), (n + 3, true)] {
                let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
                let b: Vec<f32> = (0..k.max(1) * ldb).map(|i| value(i, 2)).collect();
                let c0: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
                let mut c = c0.clone();
                ab_few_cols((m, n, k), &a, &b, ldb, &mut c, accumulate).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let s: f64 = (0..k)
                            .map(|l| a[i * k + l] as f64 * b[l * ldb + j] as f64)
                            .sum();
                        let want = s + if accumulate {
                            c0[i * n + j] as f64
                        } else {
                            0.0
                        };
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
