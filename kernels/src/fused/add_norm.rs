//! `LayerNorm` or `RMSNorm` of a residual sum ([`super::FusedOp::AddLayerNorm`]): the sum
//! of each row is formed and normalised in one pass, and kept as a second output where the
//! layer's residual stream reads it again.
use super::{describe, expect_inputs, f32s, make, KResult};
use crate::norm::{layer_norm_block, rms_norm_block, rows_and_param, BLOCK_ROWS};
use crate::simd::vectorized;
use tessera_ir::op::NormAttrs;
use tessera_ir::{Tensor, TensorData};

/// `LayerNorm((a [+ c]) + b)` over the last axis (inputs a, [c,] b, scale[, bias]), or
/// `RMSNorm` of it when `rms` (no bias); with `keep_sum`, the sum too (the second output).
pub(super) fn add_layer_norm(
    attrs: &NormAttrs,
    rms: bool,
    has_bias: bool,
    pre_bias: bool,
    keep_sum: bool,
    inputs: &[&Tensor],
) -> KResult<Vec<Tensor>> {
    expect_inputs(inputs, 3 + has_bias as usize + pre_bias as usize)?;
    let (c, inputs) = match pre_bias {
        true => (Some(inputs[1]), [&inputs[..1], &inputs[2..]].concat()),
        false => (None, inputs.to_vec()),
    };
    let (a, b) = (inputs[0], inputs[1]);
    let (x, y) = (f32s(a, "a")?, f32s(b, "b")?);
    let n = a.shape.last().copied().unwrap_or(1);
    let c = match c {
        Some(c) if c.shape != [n] => {
            return Err(format!(
                "bias {} is not a vector of {n} columns",
                describe(c)
            ))
        }
        Some(c) => Some(f32s(c, "bias")?),
        None => None,
    };
    if a.shape != b.shape {
        return Err(format!("cannot add {} and {}", describe(a), describe(b)));
    }
    if attrs.axis + 1 != a.shape.len() {
        return Err(format!(
            "normalises from axis {} of {}, not the last axis",
            attrs.axis,
            describe(a)
        ));
    }
    if rms && has_bias {
        return Err("an RMSNorm has no bias".into());
    }
    let (_, inner, s) = rows_and_param(attrs.axis, a, inputs[2], "scale")?;
    let bias = match has_bias {
        true => Some(rows_and_param(attrs.axis, a, inputs[3], "bias")?.2),
        false => None,
    };
    let len = x.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // The sums: the second output, or a block of scratch per piece of rows.
    let mut sums: Vec<f32> = Vec::with_capacity(if keep_sum { len } else { 0 });
    let kept_len = sums.capacity().min(len);
    if inner > 0 {
        let (dst, kept) = (
            &mut out.spare_capacity_mut()[..len],
            &mut sums.spare_capacity_mut()[..kept_len],
        );
        crate::par_rows_pair(dst, kept, inner, |r0, dsts, kept| {
            let (x, y) = (&x[r0 * inner..], &y[r0 * inner..]);
            let block = BLOCK_ROWS * inner;
            let mut scratch: Vec<f32> = Vec::with_capacity(if keep_sum { 0 } else { block });
            vectorized(
                #[inline(always)]
                || {
                    for (bi, dsts) in dsts.chunks_mut(block).enumerate() {
                        let (at, m) = (bi * block, dsts.len());
                        let sums = match keep_sum {
                            true => &mut kept[at..at + m],
                            false => &mut scratch.spare_capacity_mut()[..m],
                        };
                        let (xb, yb) = (&x[at..at + m], &y[at..at + m]);
                        match c {
                            // (a + c) + b: the unfused Adds' order (each commutative).
                            Some(c) => {
                                for ((sr, xr), yr) in sums
                                    .chunks_exact_mut(inner)
                                    .zip(xb.chunks_exact(inner))
                                    .zip(yb.chunks_exact(inner))
                                {
                                    sr.iter_mut().zip(xr.iter().zip(c)).zip(yr).for_each(
                                        |((s, (p, e)), q)| {
                                            s.write((p + e) + q);
                                        },
                                    );
                                }
                            }
                            None => {
                                sums.iter_mut()
                                    .zip(xb.iter().zip(yb))
                                    .for_each(|(s, (p, q))| {
                                        s.write(p + q);
                                    })
                            }
                        }
                        // SAFETY: the loop above wrote every element of `sums` (`m` is a
                        // whole number of rows: `dsts` is a piece of whole rows, and x, y and
                        // the pieces have the output's length); MaybeUninit<f32> has f32's
                        // layout.
                        let sums: &[f32] =
                            unsafe { std::slice::from_raw_parts(sums.as_ptr().cast(), m) };
                        let eps = attrs.epsilon;
                        match rms {
                            true => rms_norm_block(sums, dsts, inner, &s, eps),
                            false => {
                                layer_norm_block(sums, dsts, inner, &s, bias.as_deref(), eps);
                            }
                        }
                    }
                },
            )
        });
        // SAFETY: the pieces above cover every row of `out` (and of `sums` when kept): each
        // block wrote its sums, then its normalised rows.
        unsafe {
            out.set_len(len);
            sums.set_len(kept_len);
        }
    }
    let mut outs = vec![make(a.dtype, a.shape.clone(), TensorData::F32(out))?];
    if keep_sum {
        outs.push(make(a.dtype, a.shape.clone(), TensorData::F32(sums))?);
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{eval_fused, eval_fused_outputs, FusedOp};
    use tessera_ir::op::*;
    use tessera_ir::Op;

    #[test]
    fn add_layer_norm_equals_the_unfused_pair_bitwise() {
        let a = rand(vec![3, 4, 16], 5);
        let b = rand(vec![3, 4, 16], 6);
        let s = rand(vec![16], 7);
        let bias = rand(vec![16], 8);
        let attrs = NormAttrs {
            axis: 2,
            epsilon: 1e-12,
        };
        let want = run(
            Op::LayerNorm(attrs.clone()),
            &[&bin(BinaryOp::Add, &a, &b), &s, &bias],
        );
        let op = FusedOp::AddLayerNorm {
            attrs: attrs.clone(),
            rms: false,
            has_bias: true,
            pre_bias: false,
            keep_sum: false,
        };
        let got = eval_fused(&op, &[&a, &b, &s, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
        // LayerNorm((y + c) + r): a row-parallel layer's bias after its all-reduce.
        let c = rand(vec![16], 9);
        let want = run(
            Op::LayerNorm(attrs.clone()),
            &[
                &bin(BinaryOp::Add, &bin(BinaryOp::Add, &c, &a), &b),
                &s,
                &bias,
            ],
        );
        let op = FusedOp::AddLayerNorm {
            attrs: attrs.clone(),
            rms: false,
            has_bias: true,
            pre_bias: true,
            keep_sum: false,
        };
        let got = eval_fused(&op, &[&a, &c, &b, &s, &bias]).unwrap();
        assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
    }

    /// With the sum kept (a pre-norm transformer's residual stream), the second output
    /// equals the unfused Adds and the first the LayerNorm or RMSNorm of it, bit for bit,
    /// over rows enough to split between threads.
    #[test]
    fn add_norm_keeps_the_sum() {
        let (a, b) = (rand(vec![4, 1100, 64], 5), rand(vec![4, 1100, 64], 6));
        let (s, c) = (rand(vec![64], 7), rand(vec![64], 9));
        let attrs = NormAttrs {
            axis: 2,
            epsilon: 1e-5,
        };
        let sum = bin(BinaryOp::Add, &bin(BinaryOp::Add, &c, &a), &b);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for rms in [false, true] {
            let norm = match rms {
                true => run(Op::RmsNorm(attrs.clone()), &[&sum, &s]),
                false => run(Op::LayerNorm(attrs.clone()), &[&sum, &s]),
            };
            let op = FusedOp::AddLayerNorm {
                attrs: attrs.clone(),
                rms,
                has_bias: false,
                pre_bias: true,
                keep_sum: true,
            };
            for threads in [1, 2] {
                let go = || eval_fused_outputs(&op, &[&a, &c, &b, &s]).unwrap();
                let got = if threads == 2 { pool.install(go) } else { go() };
                assert_eq!(got.len(), 2);
                assert_eq!(
                    got[0].as_f32().unwrap(),
                    norm.as_f32().unwrap(),
                    "rms {rms}"
                );
                assert_eq!(got[1].as_f32().unwrap(), sum.as_f32().unwrap());
                assert_eq!(got[1].shape, sum.shape);
            }
        }
        // An RMSNorm has no bias input.
        let op = FusedOp::AddLayerNorm {
            attrs,
            rms: true,
            has_bias: true,
            pre_bias: false,
            keep_sum: false,
        };
        assert!(eval_fused(&op, &[&a, &b, &s, &c]).is_err());
    }
}
