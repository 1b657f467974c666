//! Softmax and LogSoftmax over one axis (max-subtracted, f32 accumulation).
use super::simd;
use super::{describe, make, KResult};
use tessera_ir::{Tensor, TensorData};

/// Softmax (or LogSoftmax when `log`) of `x` along `axis`.
pub(crate) fn softmax(axis: usize, log: bool, x: &Tensor) -> KResult<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    if axis >= x.shape.len() {
        return Err(format!("axis {axis} out of range for {}", describe(x)));
    }
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    if inner == 1 {
        // Contiguous rows: work in place on the output, no scratch row.
        let mut out = v.to_vec();
        if n > 0 {
            simd::vectorized(
                #[inline(always)]
                || {
                    // A `for` loop, not `for_each`: `for_each` runs through an outlined
                    // `Iterator::fold` compiled without the AVX-512 features of this
                    // region (measured: 3.4 ms per [8, 4, 128, 128] Softmax in real/llama).
                    for row in out.chunks_exact_mut(n) {
                        softmax_row(row, log);
                    }
                },
            );
        }
        return make(x.dtype, x.shape.clone(), TensorData::F32(out));
    }
    // A middle axis: each block of n·inner holds `inner` interleaved rows; the passes run
    // over the block row by row with the `inner` columns as vector lanes.
    let mut out = v.to_vec();
    if n > 0 && inner > 0 {
        let mut max = vec![0f32; inner];
        let mut sum = vec![0f32; inner];
        simd::vectorized(
            #[inline(always)]
            || {
                for blk in out.chunks_exact_mut(n * inner) {
                    softmax_columns(blk, inner, log, (&mut max, &mut sum));
                }
            },
        );
    }
    make(x.dtype, x.shape.clone(), TensorData::F32(out))
}

/// Softmax (or log-softmax) in place down the columns of `blk`, `n` rows of `inner`
/// values: the same passes as [`softmax_row`] (max, shifted exponentials and their sum,
/// then scale or subtract the log-sum), with the columns as vector lanes.
#[inline(always)]
fn softmax_columns(blk: &mut [f32], inner: usize, log: bool, (max, sum): (&mut [f32], &mut [f32])) {
    max.fill(f32::NEG_INFINITY);
    sum.fill(0.0);
    for row in blk.chunks_exact(inner) {
        for (m, &x) in max.iter_mut().zip(row) {
            *m = if x > *m { x } else { *m };
        }
    }
    for row in blk.chunks_exact_mut(inner) {
        for ((x, &m), s) in row.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
            let t = *x - m;
            let e = simd::exp_nonpositive(t);
            *s += e;
            *x = if log { t } else { e };
        }
    }
    if log {
        for s in sum.iter_mut() {
            *s = s.ln();
        }
        for row in blk.chunks_exact_mut(inner) {
            for (x, &ls) in row.iter_mut().zip(sum.iter()) {
                *x -= ls;
            }
        }
    } else {
        for s in sum.iter_mut() {
            *s = 1.0 / *s;
        }
        for row in blk.chunks_exact_mut(inner) {
            for (x, &inv) in row.iter_mut().zip(sum.iter()) {
                *x *= inv;
            }
        }
    }
}

/// In-place softmax / log-softmax of one contiguous row (each exponential computed once).
#[inline(always)]
pub fn softmax_row(row: &mut [f32], log: bool) {
    // `for` loops, not `for_each`/`fold`: those may run through outlined iterator
    // functions compiled without the wide region's features (see `softmax`).
    if log {
        let max = simd::max(row);
        for r in row.iter_mut() {
            *r -= max;
        }
        let ls = simd::sum_by(row, simd::exp_nonpositive).ln();
        for r in row.iter_mut() {
            *r -= ls;
        }
    } else {
        let inv = exp_shifted(row);
        for r in row.iter_mut() {
            *r *= inv;
        }
    }
}

/// The softmax's first passes over a row: its max, then `e^(x - max)` in place and their sum
/// in one pass (in `simd::sum`'s lane order); returns `1 / sum`.
#[inline(always)]
fn exp_shifted(row: &mut [f32]) -> f32 {
    let max = simd::max(row);
    1.0 / exp_sum(row, max)
}

/// `e^(x - shift)` in place over a row and their sum, in one pass, summed in `simd::sum`'s
/// lane order (the same value as summing afterwards).
#[inline(always)]
fn exp_sum(row: &mut [f32], shift: f32) -> f32 {
    simd::sum_map(
        row,
        #[inline(always)]
        |r| simd::exp_nonpositive(r - shift),
    )
}

/// [`softmax_row`] (not log) followed by `Where(IsNaN(p), fill, p)`, the replacement done in
/// the pass that scales by the inverse sum (the same arithmetic, one pass fewer).
#[inline(always)]
pub(crate) fn softmax_row_nan_fill(row: &mut [f32], fill: f32) {
    let inv = exp_shifted(row);
    for r in row.iter_mut() {
        let p = *r * inv;
        *r = if p.is_nan() { fill } else { p };
    }
}

/// ONNX Attention's reference softmax: a row whose maximum is −∞ uses 0 as its shift, a zero sum
/// divides by 1 (the vectorisable [`simd::exp_nonpositive`], max and split sum).
#[inline(always)]
pub(crate) fn softmax_row_guarded(row: &mut [f32]) {
    let max = simd::max(row);
    let shift = if max == f32::NEG_INFINITY { 0.0 } else { max };
    let sum = exp_sum(row, shift);
    let sum = if sum == 0.0 { 1.0 } else { sum };
    for x in row.iter_mut() {
        *x /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_last_axis_is_stable() {
        let x = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0]);
        let y = softmax(1, false, &x).unwrap();
        let v = y.as_f32().unwrap();
        // softmax([1,2,3]) = [0.09003057, 0.24472847, 0.66524096]
        for (a, b) in v[..3]
            .iter()
            .zip([0.090_030_57, 0.244_728_47, 0.665_240_96])
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        for a in &v[3..] {
            assert!((a - 1.0 / 3.0).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_middle_axis_and_log() {
        // [1,2,2]: softmax over axis 1 pairs (x[0,0,j], x[0,1,j]).
        let x = Tensor::f32(vec![1, 2, 2], vec![0.0, 1.0, 0.0, 3.0]);
        let y = softmax(1, false, &x).unwrap();
        let v = y.as_f32().unwrap();
        assert!((v[0] - 0.5).abs() < 1e-7 && (v[2] - 0.5).abs() < 1e-7);
        // e^1/(e^1+e^3) = 0.11920292
        assert!((v[1] - 0.119_202_92).abs() < 1e-6 && (v[3] - 0.880_797_1).abs() < 1e-6);
        let l = softmax(1, true, &x).unwrap();
        assert!((l.as_f32().unwrap()[1] - 0.119_202_92f32.ln()).abs() < 1e-5);
    }

    /// A middle axis gives, column by column, the last-axis softmax of the transposed
    /// values (same passes; the sums differ only in order), log form and NaN included.
    #[test]
    fn middle_axis_equals_last_axis_of_the_transpose() {
        let (a, n, c) = (3usize, 19usize, 21usize);
        let mut v: Vec<f32> = (0..a * n * c)
            .map(|i| (i as f32 * 0.37).sin() * 6.0)
            .collect();
        v[5] = f32::NAN; // column 5 of block 0
        let mut t = vec![0f32; v.len()]; // [a, c, n]
        for i in 0..a {
            for j in 0..n {
                for k in 0..c {
                    t[(i * c + k) * n + j] = v[(i * n + j) * c + k];
                }
            }
        }
        for log in [false, true] {
            let y = softmax(1, log, &Tensor::f32(vec![a, n, c], v.clone())).unwrap();
            let z = softmax(2, log, &Tensor::f32(vec![a, c, n], t.clone())).unwrap();
            let (y, z) = (y.as_f32().unwrap(), z.as_f32().unwrap());
            for i in 0..a {
                for j in 0..n {
                    for k in 0..c {
                        let (p, q) = (y[(i * n + j) * c + k], z[(i * c + k) * n + j]);
                        assert!(
                            (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-6 * q.abs().max(1.0),
                            "log={log} [{i},{j},{k}]: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}
