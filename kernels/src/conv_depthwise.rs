//! Depthwise Conv (one input channel per group, one output channel per input channel) over
//! small planes, channels innermost: per image, X is transposed to `[position, channel]`;
//! every output position starts from the biases and adds, tap by tap, `w[:, tap] ×
//! x[in, :]` over all channels, in units of (image, 16 channels) four at a time in registers
//! (two loads and one multiply-add per unit and tap, one store per output, four independent
//! chains even when a Conv has 16 channels); the result is transposed back. Channels are
//! padded with zeros to a whole number of 16-lane blocks (24 channels run as two blocks,
//! not one block and eight scalar chains). The plane-by-plane loops (`conv.rs`,
//! `conv_depthwise_flat.rs`) spend more on a few runs of one or two elements per tap and
//! plane, or on padding, than on the arithmetic on 2×2 and 4×4 planes (MobileNet-V3's late
//! 5×5 depthwise Convs: 8·576 planes of 4 outputs, 25 taps).
//!
//! Each output element receives the bias and then the taps in ascending order, one fused
//! multiply-add `acc = w·x + acc` each, exactly as in the plane-by-plane loops, so they all
//! give the same bits.
use super::conv_epilogue::Epilogue;
use super::conv_taps::{over_images, position_pairs, TapTable};
use super::simd::{fma, vectorized};
use super::transpose2d::transpose_pitched;

/// Output planes at most this large take the channels-innermost path.
pub(crate) const SMALL_PLANE: usize = 64;

/// Channels below which the channels-innermost vectors are too short to pay for the
/// transposes.
pub(crate) const MIN_CHANNELS: usize = 8;

/// Depthwise Conv of `n` images of `c` channels (`x`: `[n, c, p_in]`, `w`: `[c, K]`, one
/// bias per channel or none) into `out` (`[n, c, P_out]`, every element written), then `epi`
/// on each image.
pub(crate) fn depthwise_channels_last(
    taps: &TapTable,
    x: &[f32],
    w: &[f32],
    bias_v: Option<&[f32]>,
    out: &mut [f32],
    (n, c, p_in): (usize, usize, usize),
    epi: Epilogue<'_>,
) {
    let (p_out, kl) = (taps.plane, taps.taps());
    if p_out == 0 || kl == 0 || c == 0 || n == 0 {
        return;
    }
    // Channels padded to whole blocks (the padding lanes stay zero and are never copied
    // out).
    let cp = c.next_multiple_of(L);
    let mut wt = vec![0f32; kl * cp];
    transpose_pitched(w, kl, &mut wt, cp, c, kl);
    // Per output position, its (tap, input position) pairs in ascending tap order.
    let (pairs, starts) = position_pairs(taps, cp);
    // Each channel's bias (zero in the padding lanes, or without one).
    let mut bias = vec![0f32; cp];
    if let Some(b) = bias_v {
        bias[..c].copy_from_slice(&b[..c]);
    }
    // A run of images with its own scratch (transposed inputs and accumulators, all images
    // of the run at once).
    let images = |first: usize, dst: &mut [f32]| {
        let imgs = dst.len() / (c * p_out);
        let mut xt = vec![0f32; imgs * p_in * cp];
        let mut acc = vec![0f32; imgs * p_out * cp];
        vectorized(
            #[inline(always)]
            || {
                for (j, xj) in xt.chunks_exact_mut(p_in * cp).enumerate() {
                    let xi = &x[(first + j) * c * p_in..][..c * p_in];
                    transpose_pitched(xi, p_in, xj, cp, c, p_in);
                }
                let geo = Geometry {
                    pairs: &pairs,
                    starts: &starts,
                    cp,
                    p_in,
                    p_out,
                };
                units(&geo, imgs, &bias, &wt, &xt, &mut acc);
                for (j, aj) in acc.chunks_exact(p_out * cp).enumerate() {
                    let dj = &mut dst[j * c * p_out..][..c * p_out];
                    transpose_pitched(aj, cp, dj, p_out, p_out, c);
                }
            },
        );
        if !epi.is_empty() {
            for (j, img_out) in dst.chunks_exact_mut(c * p_out).enumerate() {
                epi.apply(img_out, (first + j) * c * p_out);
            }
        }
    };
    over_images(out, c * p_out, n * c * p_out * kl, images);
}

/// The per-call tables of [`depthwise_channels_last`]: position `o`'s (weight offset,
/// input offset) pairs are `pairs[starts[o]..starts[o + 1]]`, in ascending tap order;
/// `cp` is the padded channel count (a multiple of [`L`]).
struct Geometry<'a> {
    pairs: &'a [(usize, usize)],
    starts: &'a [usize],
    cp: usize,
    p_in: usize,
    p_out: usize,
}

/// Lanes per vector block of channels.
const L: usize = 16;

/// Accumulates every output of `imgs` images (`xt`: `[imgs, p_in, cp]`, `acc`:
/// `[imgs, p_out, cp]`): `acc[o, ch] = bias[ch]` plus, pair by pair, `wt[w + ch] · xt[x + ch]`
/// (fused). The work units are (image, block of 16 channels), taken four at a time so that
/// four independent multiply-add chains are in flight per tap: with 16 or 32 channels (a
/// ConvNeXt-style block) one image alone has one or two, and each tap waits for the
/// previous one's latency. A last group of fewer than four repeats its last unit (the same
/// values written twice).
#[inline(always)]
fn units(geo: &Geometry<'_>, imgs: usize, bias: &[f32], wt: &[f32], xt: &[f32], acc: &mut [f32]) {
    let Geometry {
        pairs,
        starts,
        cp,
        p_in,
        p_out,
    } = *geo;
    let lanes =
        |v: &[f32], at: usize| -> [f32; L] { v[at..at + L].try_into().expect("an L-long slice") };
    let blocks = cp / L;
    let total = imgs * blocks;
    for g in (0..total).step_by(4) {
        // Unit k of the group: (input offset of its image and block, channel offset).
        let unit = |k: usize| {
            // Image-major: a group is four blocks of one image when it has them (contiguous
            // loads), else the blocks of consecutive images.
            let v = (g + k).min(total - 1);
            let (j, b) = (v / blocks, v % blocks);
            (j * p_in * cp + b * L, b * L, j * p_out * cp + b * L)
        };
        let us = [unit(0), unit(1), unit(2), unit(3)];
        for o in 0..p_out {
            let mut a = [
                lanes(bias, us[0].1),
                lanes(bias, us[1].1),
                lanes(bias, us[2].1),
                lanes(bias, us[3].1),
            ];
            for &(wo, xo) in &pairs[starts[o]..starts[o + 1]] {
                for (ak, u) in a.iter_mut().zip(&us) {
                    let (wv, xv) = (lanes(wt, wo + u.1), lanes(xt, xo + u.0));
                    for l in 0..L {
                        ak[l] = fma(wv[l], xv[l], ak[l]);
                    }
                }
            }
            for (ak, u) in a.iter().zip(&us) {
                acc[u.2 + o * cp..][..L].copy_from_slice(ak);
            }
        }
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
        // Two whole blocks of 16 and a tail of 8 over 3 images: 6 units, one group of 4
        // and one of 2 (its last unit repeated).
        check(&[3, 40, 4, 4], &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1]);
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
