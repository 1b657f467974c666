//! Depthwise Conv (one input channel per group, one output channel per input channel) over
//! small planes, channels innermost: per image, X is transposed to `[position, channel]`;
//! every output position starts from the biases and adds, tap by tap, `w[:, tap] ×
//! x[in, :]` over all channels, 64 channels at a time in registers (two loads and one
//! multiply-add per 16 channels and tap, one store per output); the result is transposed
//! back. The plane-by-plane loops (`conv.rs`, `conv_depthwise_flat.rs`) spend more on a
//! few runs of one or two elements per tap and plane, or on padding, than on the
//! arithmetic on 2×2 and 4×4 planes (MobileNet-V3's late 5×5 depthwise Convs: 8·576
//! planes of 4 outputs, 25 taps).
//!
//! Each output element receives the bias and then the taps in ascending order, one fused
//! multiply-add `acc = w·x + acc` each, exactly as in the plane-by-plane loops, so they all
//! give the same bits.
use super::conv_epilogue::Epilogue;
use super::conv_taps::{TapTable, PARALLEL_MIN_TAPS};
use super::simd::{fma, vectorized};
use super::transpose2d::transpose;
use rayon::prelude::*;

/// Output planes at most this large take the channels-innermost path.
pub(crate) const SMALL_PLANE: usize = 64;

/// Channels below which the channels-innermost vectors are too short to pay for the
/// transposes.
pub(crate) const MIN_CHANNELS: usize = 8;

/// Depthwise Conv of `n` images of `c` channels (`x`: `[n, c, p_in]`, `w`: `[c, K]`) into
/// `out` (`[n, c, P_out]`, holding the bias or zeros), then `epi` on each image.
pub(crate) fn depthwise_channels_last(
    taps: &TapTable,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    (n, c, p_in): (usize, usize, usize),
    epi: Epilogue<'_>,
) {
    let (p_out, kl, stride) = (taps.plane, taps.taps(), taps.stride);
    if p_out == 0 || kl == 0 || c == 0 || n == 0 {
        return;
    }
    let mut wt = vec![0f32; kl * c];
    transpose(w, &mut wt, c, kl);
    // Per output position, its (tap, input position) pairs in ascending tap order, as
    // offsets into the channels-innermost weights and input.
    let mut per_out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); p_out];
    for kp in 0..kl {
        for r in taps.runs(kp) {
            for j in 0..r.len {
                per_out[r.dst + j].push((kp * c, (r.src + j * stride) * c));
            }
        }
    }
    let image = |img: usize, dst: &mut [f32]| {
        let mut xt = vec![0f32; p_in * c];
        let mut acc = vec![0f32; p_out * c];
        // `dst` holds each channel's bias (or zero) in every element of its plane.
        let bias: Vec<f32> = (0..c).map(|ch| dst[ch * p_out]).collect();
        vectorized(
            #[inline(always)]
            || {
                transpose(&x[img * c * p_in..][..c * p_in], &mut xt, c, p_in);
                for (o, pairs) in per_out.iter().enumerate() {
                    position(&mut acc[o * c..][..c], &bias, pairs, &wt, &xt);
                }
                transpose(&acc, dst, p_out, c);
            },
        );
        if !epi.is_empty() {
            epi.apply(dst, img * c * p_out);
        }
    };
    let threads = crate::pool_threads();
    if threads > 1 && n > 1 && n * c * p_out * kl >= PARALLEL_MIN_TAPS {
        out.par_chunks_mut(c * p_out)
            .enumerate()
            .for_each(|(img, dst)| image(img, dst));
    } else {
        for (img, dst) in out.chunks_exact_mut(c * p_out).enumerate() {
            image(img, dst);
        }
    }
}

/// One output position over all channels: `out[ch] = bias[ch]` plus, pair by pair,
/// `wt[w + ch] · xt[x + ch]` (fused), 64 channels at a time in four vector registers that
/// stay in place across the taps (then 16 at a time, then one), so each tap costs two
/// loads and one multiply-add per 16 channels and the output is stored once.
#[inline(always)]
fn position(out: &mut [f32], bias: &[f32], pairs: &[(usize, usize)], wt: &[f32], xt: &[f32]) {
    const L: usize = 16;
    let c = out.len();
    let lanes =
        |v: &[f32], at: usize| -> [f32; L] { v[at..at + L].try_into().expect("an L-long slice") };
    let mut cb = 0;
    while cb + 4 * L <= c {
        let (mut a0, mut a1, mut a2, mut a3) = (
            lanes(bias, cb),
            lanes(bias, cb + L),
            lanes(bias, cb + 2 * L),
            lanes(bias, cb + 3 * L),
        );
        for &(wo, xo) in pairs {
            for (a, q) in [&mut a0, &mut a1, &mut a2, &mut a3].into_iter().zip(0..4) {
                let (wv, xv) = (lanes(wt, wo + cb + q * L), lanes(xt, xo + cb + q * L));
                for l in 0..L {
                    a[l] = fma(wv[l], xv[l], a[l]);
                }
            }
        }
        for (q, a) in [a0, a1, a2, a3].iter().enumerate() {
            out[cb + q * L..cb + (q + 1) * L].copy_from_slice(a);
        }
        cb += 4 * L;
    }
    while cb + L <= c {
        let mut a = lanes(bias, cb);
        for &(wo, xo) in pairs {
            let (wv, xv) = (lanes(wt, wo + cb), lanes(xt, xo + cb));
            for l in 0..L {
                a[l] = fma(wv[l], xv[l], a[l]);
            }
        }
        out[cb..cb + L].copy_from_slice(&a);
        cb += L;
    }
    for ch in cb..c {
        let mut a = bias[ch];
        for &(wo, xo) in pairs {
            a = fma(wt[wo + ch], xt[xo + ch], a);
        }
        out[ch] = a;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{MIN_CHANNELS, SMALL_PLANE};
    use crate::conv::conv;
    use tessera_ir::op::ConvAttrs;
    use tessera_ir::Tensor;

    /// Deterministic values in [-1, 1) (xorshift), shared by the depthwise tests.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Channel `ch` of an `[n, c, ..]` tensor as `[n, 1, ..]`.
    fn channel(t: &[f32], n: usize, c: usize, plane: usize, ch: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| t[(i * c + ch) * plane..][..plane].iter().copied())
            .collect()
    }

    /// The channels-innermost path (all channels at once) gives the bits of the
    /// plane-by-plane loop, which a one-channel Conv takes (fewer than MIN_CHANNELS).
    fn check(x: &[usize], k: &[usize], strides: &[usize], dil: &[usize], pads: &[usize]) {
        let (n, c) = (x[0], x[1]);
        assert!(c >= MIN_CHANNELS);
        let p_in: usize = x[2..].iter().product();
        let xv = values(n * c * p_in, 1);
        let kl: usize = k.iter().product();
        let wv = values(c * kl, 2);
        let bv = values(c, 3);
        let attrs = ConvAttrs {
            strides: strides.to_vec(),
            dilations: dil.to_vec(),
            pads: pads.to_vec(),
            group: c,
            depthwise: false,
        };
        let mut ws = vec![c, 1];
        ws.extend_from_slice(k);
        let xt = Tensor::f32(x.to_vec(), xv.clone());
        let wt = Tensor::f32(ws.clone(), wv.clone());
        let all = conv(&attrs, &xt, &wt, Some(&Tensor::f32(vec![c], bv.clone()))).unwrap();
        let p_out: usize = all.shape[2..].iter().product();
        assert!(p_out <= SMALL_PLANE, "{:?} takes the plane loop", all.shape);
        let all = all.as_f32().unwrap();
        let one = ConvAttrs { group: 1, ..attrs };
        for ch in 0..c {
            let mut xs = x.to_vec();
            xs[1] = 1;
            ws[0] = 1;
            let y = conv(
                &one,
                &Tensor::f32(xs, channel(&xv, n, c, p_in, ch)),
                &Tensor::f32(ws.clone(), wv[ch * kl..][..kl].to_vec()),
                Some(&Tensor::f32(vec![1], vec![bv[ch]])),
            )
            .unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&channel(all, n, c, p_out, ch)),
                bits(y.as_f32().unwrap()),
                "{x:?} {k:?} channel {ch}"
            );
        }
    }

    #[test]
    fn channels_innermost_depthwise_equals_the_plane_loop_bitwise() {
        check(&[3, 12, 5, 5], &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]);
        check(&[2, 9, 7, 6], &[5, 5], &[2, 2], &[1, 1], &[2, 2, 2, 2]);
        check(&[2, 16, 6, 6], &[3, 3], &[1, 1], &[2, 2], &[1, 2, 2, 1]);
        check(&[2, 8, 2, 2], &[5, 5], &[1, 1], &[1, 1], &[2, 2, 2, 2]);
        check(&[2, 10, 9], &[3], &[2], &[1], &[0, 1]);
        check(
            &[1, 8, 3, 4, 4],
            &[3, 3, 3],
            &[1, 1, 1],
            &[1, 1, 1],
            &[1; 6],
        );
    }

    #[test]
    fn images_split_over_threads_give_the_same_bits() {
        // 8·64 planes of 8×8 with 9 taps: above the threshold for splitting images.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| check(&[8, 64, 8, 8], &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]));
    }
}
