//! LayerNormalization and RMSNormalization over axes `axis..rank` (f32, two-pass).
use super::binary::broadcast_to;
use super::simd::{self, vectorized};
use super::{describe, make, KResult};
use std::mem::MaybeUninit;
use tessera_ir::op::NormAttrs;
use tessera_ir::{Tensor, TensorData};

/// Splits `x` into `outer` rows of `inner` normalised elements and broadcasts `param` to a row.
pub(crate) fn rows_and_param(
    axis: usize,
    x: &Tensor,
    param: &Tensor,
    what: &str,
) -> KResult<(usize, usize, Vec<f32>)> {
    if axis >= x.shape.len() {
        return Err(format!("axis {axis} out of range for {}", describe(x)));
    }
    let norm_shape = &x.shape[axis..];
    let p = broadcast_to(param, norm_shape).map_err(|_| {
        format!(
            "{what} {} does not broadcast to {:?}",
            describe(param),
            norm_shape
        )
    })?;
    let pv = p
        .as_f32()
        .ok_or_else(|| format!("{what} must be float, got {}", describe(param)))?
        .to_vec();
    let inner: usize = norm_shape.iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    Ok((outer, inner, pv))
}

/// LayerNorm: returns Y, Mean and InvStdDev (the latter two of shape `x.shape[..axis]`
/// followed by ones, as ONNX).
pub(crate) fn layer_norm(
    a: &NormAttrs,
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
) -> KResult<Vec<Tensor>> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    let (outer, inner, s) = rows_and_param(a.axis, x, scale, "scale")?;
    let b = match bias {
        Some(b) => Some(rows_and_param(a.axis, x, b, "bias")?.2),
        None => None,
    };
    let n = v.len();
    let mut y: Vec<f32> = Vec::with_capacity(n);
    let mut means = vec![0f32; outer];
    let mut inv_stds = vec![0f32; outer];
    if inner > 0 {
        let dst = &mut y.spare_capacity_mut()[..n];
        vectorized(
            #[inline(always)]
            || {
                let block = BLOCK_ROWS * inner;
                let stats = means
                    .chunks_mut(BLOCK_ROWS)
                    .zip(inv_stds.chunks_mut(BLOCK_ROWS));
                for ((rows, dst), (m, i)) in v.chunks(block).zip(dst.chunks_mut(block)).zip(stats) {
                    let (bm, bi) = layer_norm_block(rows, dst, inner, &s, b.as_deref(), a.epsilon);
                    m.copy_from_slice(&bm[..m.len()]);
                    i.copy_from_slice(&bi[..i.len()]);
                }
            },
        );
    }
    // SAFETY: `v` holds `outer` rows of `inner` (or n = 0); the blocks above wrote every row
    // of `dst`, which has the same length as `v`.
    unsafe { y.set_len(n) };
    let mut stat_shape = x.shape[..a.axis].to_vec();
    stat_shape.resize(x.shape.len(), 1);
    Ok(vec![
        make(x.dtype, x.shape.clone(), TensorData::F32(y))?,
        make(
            tessera_ir::DType::F32,
            stat_shape.clone(),
            TensorData::F32(means),
        )?,
        make(
            tessera_ir::DType::F32,
            stat_shape,
            TensorData::F32(inv_stds),
        )?,
    ])
}

/// Rows normalised together ([`layer_norm_block`], [`rms_norm_block`]): each row's
/// statistics end in divisions and a square root, which for 16 rows are one vector
/// instruction each rather than 16 scalar ones (whose throughput bound rows of 64).
pub(crate) const BLOCK_ROWS: usize = 16;

/// Normalises up to [`BLOCK_ROWS`] rows of `inner` into `dst` (every element written):
/// `(x - mean) · inv · scale + bias` with `inv = 1 / sqrt(var + ε)`; returns each row's
/// (mean, inv). Sums run in [`simd::sum`]'s fixed order; callers run it inside
/// [`vectorized`].
#[inline(always)]
pub(crate) fn layer_norm_block(
    rows: &[f32],
    dst: &mut [MaybeUninit<f32>],
    inner: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    epsilon: f32,
) -> ([f32; BLOCK_ROWS], [f32; BLOCK_ROWS]) {
    let n = inner as f32;
    let (mut mean, mut inv) = ([0f32; BLOCK_ROWS], [0f32; BLOCK_ROWS]);
    for (m, row) in mean.iter_mut().zip(rows.chunks_exact(inner)) {
        *m = simd::sum(row);
    }
    // One vector division for the block's rows (rows past its end compute unused lanes).
    mean.iter_mut().for_each(|m| *m /= n);
    for ((v, &m), row) in inv.iter_mut().zip(&mean).zip(rows.chunks_exact(inner)) {
        *v = simd::sum_by(
            row,
            #[inline(always)]
            |e| (e - m) * (e - m),
        );
    }
    inv.iter_mut()
        .for_each(|v| *v = 1.0 / (*v / n + epsilon).sqrt());
    let it = dst.chunks_exact_mut(inner).zip(rows.chunks_exact(inner));
    for ((dst, row), (&mean, &inv)) in it.zip(mean.iter().zip(&inv)) {
        match bias {
            Some(b) => {
                for (((d, &e), &s), &b) in dst.iter_mut().zip(row).zip(scale).zip(b) {
                    d.write((e - mean) * inv * s + b);
                }
            }
            None => {
                for ((d, &e), &s) in dst.iter_mut().zip(row).zip(scale) {
                    d.write((e - mean) * inv * s);
                }
            }
        }
    }
    (mean, inv)
}

/// RMSNorm of up to [`BLOCK_ROWS`] rows of `inner` into `dst` (every element written):
/// `e · inv · scale` with `inv = 1 / sqrt(mean(e²) + ε)`; callers run it inside
/// [`vectorized`].
#[inline(always)]
pub(crate) fn rms_norm_block(
    rows: &[f32],
    dst: &mut [MaybeUninit<f32>],
    inner: usize,
    scale: &[f32],
    epsilon: f32,
) {
    let mut inv = [0f32; BLOCK_ROWS];
    for (v, row) in inv.iter_mut().zip(rows.chunks_exact(inner)) {
        *v = simd::sum_by(
            row,
            #[inline(always)]
            |e| e * e,
        );
    }
    // One vector division and square root for the block's rows.
    let n = inner as f32;
    inv.iter_mut()
        .for_each(|v| *v = 1.0 / (*v / n + epsilon).sqrt());
    let it = dst.chunks_exact_mut(inner).zip(rows.chunks_exact(inner));
    for ((dst, row), &inv) in it.zip(&inv) {
        for ((d, &e), &sj) in dst.iter_mut().zip(row).zip(scale) {
            d.write(e * inv * sj);
        }
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · scale`.
pub(crate) fn rms_norm(a: &NormAttrs, x: &Tensor, scale: &Tensor) -> KResult<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    let (_, inner, s) = rows_and_param(a.axis, x, scale, "scale")?;
    let n = v.len();
    let mut y: Vec<f32> = Vec::with_capacity(n);
    if inner > 0 {
        crate::par_rows(&mut y.spare_capacity_mut()[..n], inner, |r0, ys| {
            let v = &v[r0 * inner..r0 * inner + ys.len()];
            vectorized(
                #[inline(always)]
                || {
                    // `for` loops and split sums (`simd::sum_by`): a sequential f32 sum does
                    // not vectorise (measured 1.1 ns per element over [8, 128, 64] rows).
                    let block = BLOCK_ROWS * inner;
                    for (yr, rows) in ys.chunks_mut(block).zip(v.chunks(block)) {
                        rms_norm_block(rows, yr, inner, &s, a.epsilon);
                    }
                },
            )
        });
    }
    // SAFETY: `v` holds whole rows of `inner` (or n = 0); the pieces above wrote every row.
    unsafe { y.set_len(n) };
    make(x.dtype, x.shape.clone(), TensorData::F32(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_rows_with_scale_and_bias() {
        let x = Tensor::f32(vec![2, 2], vec![1.0, 3.0, 0.0, 0.0]);
        let s = Tensor::f32(vec![2], vec![2.0, 1.0]);
        let b = Tensor::f32(vec![2], vec![0.5, -0.5]);
        let out = layer_norm(
            &NormAttrs {
                axis: 1,
                epsilon: 0.0,
            },
            &x,
            &s,
            Some(&b),
        )
        .unwrap();
        // Row 0: mean 2, var 1 → normalised [-1, 1] → [-2+0.5, 1-0.5].
        assert_eq!(&out[0].as_f32().unwrap()[..2], &[-1.5, 0.5]);
        assert_eq!(out[1].shape, vec![2, 1]);
        assert_eq!(out[1].as_f32().unwrap(), &[2.0, 0.0]);
        assert_eq!(out[2].as_f32().unwrap()[0], 1.0);
        // Row 1 is constant: with epsilon 0 it divides 0 by 0.
        assert!(out[0].as_f32().unwrap()[2].is_nan());
    }

    #[test]
    fn layer_norm_epsilon_and_multi_axis() {
        let x = Tensor::f32(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let s = Tensor::f32(vec![], vec![1.0]);
        let out = layer_norm(
            &NormAttrs {
                axis: 1,
                epsilon: 1e-5,
            },
            &x,
            &s,
            None,
        )
        .unwrap();
        // mean 2.5, var 1.25 → (x-2.5)/sqrt(1.25+1e-5)
        let d = (1.25f32 + 1e-5).sqrt();
        let want = [-1.5 / d, -0.5 / d, 0.5 / d, 1.5 / d];
        for (a, b) in out[0].as_f32().unwrap().iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn rms_norm_rows() {
        let x = Tensor::f32(vec![1, 2], vec![3.0, 4.0]);
        let s = Tensor::f32(vec![2], vec![1.0, 2.0]);
        let y = rms_norm(
            &NormAttrs {
                axis: 1,
                epsilon: 0.0,
            },
            &x,
            &s,
        )
        .unwrap();
        // rms = sqrt(12.5)
        let r = 12.5f32.sqrt();
        assert_eq!(y.as_f32().unwrap(), &[3.0 / r, 8.0 / r]);
    }

    /// Rows longer than a vector and with a tail (split sums), against an f64 reference.
    #[test]
    fn rms_norm_long_rows_match_f64() {
        for inner in [1usize, 15, 16, 37, 100] {
            let rows = 3;
            let v: Vec<f32> = (0..rows * inner)
                .map(|i| ((i * 7919) % 97) as f32 * 0.03 - 1.4)
                .collect();
            let sc: Vec<f32> = (0..inner).map(|j| 0.5 + j as f32 * 0.01).collect();
            let eps = 1e-6;
            let y = rms_norm(
                &NormAttrs {
                    axis: 1,
                    epsilon: eps,
                },
                &Tensor::f32(vec![rows, inner], v.clone()),
                &Tensor::f32(vec![inner], sc.clone()),
            )
            .unwrap();
            for (r, yr) in y.as_f32().unwrap().chunks(inner).enumerate() {
                let row = &v[r * inner..(r + 1) * inner];
                let ms = row.iter().map(|&e| (e as f64).powi(2)).sum::<f64>() / inner as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for j in 0..inner {
                    let want = row[j] as f64 * inv * sc[j] as f64;
                    assert!(
                        (yr[j] as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3),
                        "inner {inner} row {r} col {j}: {} vs {want}",
                        yr[j]
                    );
                }
            }
        }
    }
}
