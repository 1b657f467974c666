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
    let outer: usize = x.shape[..axis].iter().product();
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
    let mut out = vec![0f32; v.len()];
    let mut row = vec![0f32; n];
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            for (j, r) in row.iter_mut().enumerate() {
                *r = v[base + j * inner];
            }
            softmax_row(&mut row, log);
            for (j, r) in row.iter().enumerate() {
                out[base + j * inner] = *r;
            }
        }
    }
    make(x.dtype, x.shape.clone(), TensorData::F32(out))
}

/// In-place softmax / log-softmax of one contiguous row (each exponential computed once).
#[inline(always)]
pub fn softmax_row(row: &mut [f32], log: bool) {
    if log {
        let max = simd::max(row);
        row.iter_mut().for_each(|r| *r -= max);
        let ls = row
            .iter()
            .map(|&r| simd::exp_nonpositive(r))
            .fold(0f32, |a, e| a + e)
            .ln();
        row.iter_mut().for_each(|r| *r -= ls);
    } else {
        let inv = exp_shifted(row);
        row.iter_mut().for_each(|r| *r *= inv);
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
    let mut acc = [0f32; simd::LANES];
    let mut chunks = row.chunks_exact_mut(simd::LANES);
    for chunk in &mut chunks {
        for (a, r) in acc.iter_mut().zip(chunk) {
            *r = simd::exp_nonpositive(*r - shift);
            *a += *r;
        }
    }
    let mut tail = 0f32;
    for r in chunks.into_remainder() {
        *r = simd::exp_nonpositive(*r - shift);
        tail += *r;
    }
    acc.iter().sum::<f32>() + tail
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
}
