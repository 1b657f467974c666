//! LayerNormalization and RMSNormalization over axes `axis..rank` (f32, two-pass).
use super::binary::broadcast_to;
use super::simd::{self, vectorized};
use super::{describe, make, KResult};
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
    let mut y = vec![0f32; v.len()];
    let mut means = vec![0f32; outer];
    let mut inv_stds = vec![0f32; outer];
    if inner > 0 {
        vectorized(
            #[inline(always)]
            || {
                for (r, (row, dst)) in v
                    .chunks_exact(inner)
                    .zip(y.chunks_exact_mut(inner))
                    .enumerate()
                {
                    (means[r], inv_stds[r]) = layer_norm_row(row, dst, &s, b.as_deref(), a.epsilon);
                }
            },
        );
    }
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

/// Normalises one row into `dst`: `(x - mean) · inv · scale + bias` with
/// `inv = 1 / sqrt(var + ε)`; returns (mean, inv). Sums run in [`simd::sum`]'s fixed
/// order; callers run it inside [`vectorized`].
#[inline(always)]
pub(crate) fn layer_norm_row(
    row: &[f32],
    dst: &mut [f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    epsilon: f32,
) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = simd::sum(row) / n;
    let var = simd::sum_by(
        row,
        #[inline(always)]
        |e| (e - mean) * (e - mean),
    ) / n;
    let inv = 1.0 / (var + epsilon).sqrt();
    match bias {
        Some(b) => {
            for (((d, &e), &s), &b) in dst.iter_mut().zip(row).zip(scale).zip(b) {
                *d = (e - mean) * inv * s + b;
            }
        }
        None => {
            for ((d, &e), &s) in dst.iter_mut().zip(row).zip(scale) {
                *d = (e - mean) * inv * s;
            }
        }
    }
    (mean, inv)
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · scale`.
pub(crate) fn rms_norm(a: &NormAttrs, x: &Tensor, scale: &Tensor) -> KResult<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| format!("expects a float input, got {}", describe(x)))?;
    let (_, inner, s) = rows_and_param(a.axis, x, scale, "scale")?;
    let mut y = vec![0f32; v.len()];
    if inner > 0 {
        crate::par_rows(&mut y, inner, |r0, ys| {
            let v = &v[r0 * inner..];
            vectorized(
                #[inline(always)]
                || {
                    // `for` loops and split sums (`simd::sum_by`): a sequential f32 sum does
                    // not vectorise (measured 1.1 ns per element over [8, 128, 64] rows).
                    for (yr, row) in ys.chunks_exact_mut(inner).zip(v.chunks_exact(inner)) {
                        let ms = simd::sum_by(
                            row,
                            #[inline(always)]
                            |e| e * e,
                        ) / inner as f32;
                        let inv = 1.0 / (ms + a.epsilon).sqrt();
                        for ((d, &e), &sj) in yr.iter_mut().zip(row).zip(&s) {
                            *d = e * inv * sj;
                        }
                    }
                },
            )
        });
    }
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
