//! Grouped Conv with a few channels per group (RegNet's groups of 8, ResNeXt's early ones)
//! on small planes, channels innermost: per image, X is transposed to `[position,
//! channel]`; every output position starts from the biases and adds, tap by tap and input
//! channel by input channel of its group, `w[oc, ci, tap] × x[in, group·cg + ci]` for eight
//! output channels of one group at a time (one broadcast of the input element, one load of
//! the eight weights, one multiply-add), four blocks of eight in flight; four outputs of a
//! row that read the same taps share each load of the weights (eight chains). The result is
//! transposed back.
//!
//! im2col and a GEMM per group ran each group's product as its own call of a few hundred
//! multiply-adds: RegNet-Y-400MF's `[440, 8, 3, 3]` Conv over two 2×2 maps (55 groups) took
//! 150 µs, onnxruntime 20.
//!
//! Each output element receives the bias, then its live taps in ascending order and for
//! each the input channels of its group in order, one fused multiply-add each (im2col's
//! GEMM sums channel by channel, tap by tap within each: the last bits differ).
use super::conv_epilogue::Epilogue;
use super::conv_taps::{over_images, position_pairs, TapTable};
use super::simd::{fma, vectorized};
use super::transpose2d::transpose_pitched;

/// Lanes of one block of output channels (one AVX2 register).
const L: usize = 8;

/// The `L` values of `v` from `at`.
#[inline(always)]
fn lanes(v: &[f32], at: usize) -> [f32; L] {
    v[at..at + L].try_into().expect("an L-long slice")
}

/// Output positions per image up to which the channels-innermost path serves a grouped
/// Conv: the GEMM's calls per group cost more than their arithmetic on small maps. Four
/// copies of RegNet-Y's grouped Convs (groups of 8, 3×3, two images), AVX2, against im2col
/// and a GEMM per group: 440 channels on 2×2 maps 600 → 172–209 µs, 208 on 4×4 429 →
/// 214–216, 104 on 8×8 453 → 279–323, 104 at stride 2 from 16×16 683 → 337–366; 48 on
/// 16×16 (256 positions) 509 → 604, so it stays on the GEMM.
const MAX_PLANE: usize = 64;

/// Input channels per group up to which it serves (wider groups make GEMMs worth a call).
const MAX_GROUP_CHANNELS: usize = 16;

/// True when [`grouped_channels_last`] serves a Conv of `c` input and `m` output channels
/// in `g` groups with `p_out` output positions per image: more than one group and more than
/// one input channel per group (depthwise Convs have their own kernels), at most
/// [`MAX_GROUP_CHANNELS`] of them, output channels per group a multiple of eight (a block of
/// lanes never spans two groups) and at most [`MAX_PLANE`] positions.
pub(crate) fn grouped_suits(c: usize, m: usize, g: usize, p_out: usize) -> bool {
    g > 1
        && c.is_multiple_of(g)
        && m.is_multiple_of(g)
        && (2..=MAX_GROUP_CHANNELS).contains(&(c / g))
        && (m / g).is_multiple_of(L)
        && (1..=MAX_PLANE).contains(&p_out)
}

/// The weights of a grouped Conv as its kernel reads them.
#[derive(Clone, Copy)]
pub(crate) enum GroupedWeights<'a> {
    /// `[m, c/g, K]`, blocked on every call.
    Plain(&'a [f32]),
    /// Blocked when the plan was loaded ([`PackedGroupedWeight`]).
    Blocked(&'a [f32]),
}

/// Weights `[m, cg, kl]` as `[block of 8 output channels, tap, ci, 8]`: a block's weights
/// for one tap are one contiguous run.
fn block_weights(w: &[f32], m: usize, cg: usize, kl: usize) -> Vec<f32> {
    let mut wt = vec![0f32; cg * kl * m];
    for (oc, wo) in w.chunks_exact(cg * kl).take(m).enumerate() {
        let (blk, lane) = (oc / L, oc % L);
        for (ci, wc) in wo.chunks_exact(kl).enumerate() {
            for (tap, &v) in wc.iter().enumerate() {
                wt[((blk * kl + tap) * cg + ci) * L + lane] = v;
            }
        }
    }
    wt
}

/// A grouped Conv's weights blocked once, when the plan is loaded, for the
/// channels-innermost kernel (which otherwise blocks them on every call: RegNet-X's
/// `[400, 16, 3, 3]` on 1×1 maps, its taps trimmed to one, spent most of its call there).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedGroupedWeight {
    shape: Vec<usize>,
    group: usize,
    blocked: Vec<f32>,
}

impl PackedGroupedWeight {
    /// Blocks weights `w` of shape `[M, C/g, kernel..]` for `group` groups.
    pub fn pack(shape: &[usize], w: &[f32], group: usize) -> crate::KResult<Self> {
        let (m, cg) = match shape {
            [m, cg, ..] => (*m, *cg),
            _ => return Err(format!("grouped weight {shape:?} has no channel axes")),
        };
        let kl: usize = shape[2..].iter().product();
        let fits = group > 0
            && m.is_multiple_of(group)
            && (m / group).is_multiple_of(L)
            && w.len() == m * cg * kl;
        if !fits {
            return Err(format!(
                "grouped weight {shape:?} ({} values) does not block for {group} groups",
                w.len()
            ));
        }
        Ok(PackedGroupedWeight {
            shape: shape.to_vec(),
            group,
            blocked: block_weights(w, m, cg, kl),
        })
    }

    /// The weight's logical shape `[M, C/g, kernel..]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The group count it was blocked for.
    pub fn group(&self) -> usize {
        self.group
    }

    /// The blocked values.
    pub(crate) fn blocked(&self) -> &[f32] {
        &self.blocked
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.blocked.len() * 4
    }
}

/// True when the channels-innermost kernel serves a Conv of input `x` `[N, C, spatial..]`,
/// weights `w` and attributes `a` (as [`crate::direct_suits`] for the direct kernel).
pub fn grouped_conv_suits(x: &[usize], w: &[usize], a: &tessera_ir::op::ConvAttrs) -> bool {
    let s = x.len().saturating_sub(2);
    if x.len() < 3 || w.len() != x.len() || a.pads.len() != 2 * s || a.strides.len() != s {
        return false;
    }
    if a.dilations.len() != s {
        return false;
    }
    let mut p_out = 1;
    for i in 0..s {
        let pads = (a.pads[i], a.pads[s + i]);
        let (st, d) = (a.strides[i], a.dilations[i]);
        match tessera_ir::spec::window_out_extent(x[2 + i], w[2 + i], st, d, pads, false) {
            Some(e) => p_out *= e,
            None => return false,
        }
    }
    let g = a.groups(x[1]);
    w[1] * g == x[1] && grouped_suits(x[1], w[0], g, p_out)
}

/// Grouped Conv of `n` images (`x`: `[n, c, p_in]`, `w`: `[m, c/g, K]`, one bias per output
/// channel or none) into `out` (`[n, m, P_out]`, every element written), then `epi` on each
/// image. The shapes must satisfy [`grouped_suits`].
pub(crate) fn grouped_channels_last(
    taps: &TapTable,
    x: &[f32],
    w: GroupedWeights<'_>,
    bias_v: Option<&[f32]>,
    out: &mut [f32],
    (n, c, m, g, p_in): (usize, usize, usize, usize, usize),
    epi: Epilogue<'_>,
) {
    let (p_out, kl) = (taps.plane, taps.taps());
    if p_out == 0 || kl == 0 || m == 0 || n == 0 {
        return;
    }
    let (cg, mg) = (c / g, m / g);
    let blocked;
    let wt = match w {
        GroupedWeights::Plain(w) => {
            blocked = block_weights(w, m, cg, kl);
            &blocked[..]
        }
        GroupedWeights::Blocked(wt) => wt,
    };
    // Per output position, its (tap, input position) pairs in ascending tap order.
    let (pairs, starts) = position_pairs(taps, 1);
    let bias = bias_v.map_or_else(|| vec![0f32; m], |b| b[..m].to_vec());
    let quads = quad_steps(&pairs, &starts);
    let geo = Geometry {
        pairs: &pairs,
        starts: &starts,
        quads: &quads,
        c,
        m,
        cg,
        mg,
        kl,
        p_in,
        p_out,
    };
    let images = |first: usize, dst: &mut [f32]| {
        let imgs = dst.len() / (m * p_out);
        let mut xt = vec![0f32; p_in * c];
        let mut acc = vec![0f32; p_out * m];
        for j in 0..imgs {
            let dj = &mut dst[j * m * p_out..][..m * p_out];
            vectorized(
                #[inline(always)]
                || {
                    let xi = &x[(first + j) * c * p_in..][..c * p_in];
                    transpose_pitched(xi, p_in, &mut xt, c, c, p_in);
                    blocks(&geo, &bias, wt, &xt, &mut acc);
                    transpose_pitched(&acc, m, dj, p_out, p_out, m);
                },
            );
            if !epi.is_empty() {
                epi.apply(dj, (first + j) * m * p_out);
            }
        }
    };
    over_images(out, m * p_out, n * m * p_out * cg * kl, images);
}

/// The per-call tables of [`grouped_channels_last`]: position `o`'s (tap, input position)
/// pairs are `pairs[starts[o]..starts[o + 1]]`, in ascending tap order.
struct Geometry<'a> {
    pairs: &'a [(usize, usize)],
    starts: &'a [usize],
    /// Per output position `o`, `Some(d)` when positions `o..o + 4` read the same taps at
    /// inputs `d` apart ([`quad_steps`]).
    quads: &'a [Option<usize>],
    c: usize,
    m: usize,
    cg: usize,
    mg: usize,
    kl: usize,
    p_in: usize,
    p_out: usize,
}

/// Every output of one image (`xt`: `[p_in, c]`, `acc`: `[p_out, m]`): `acc[o, oc] =
/// bias[oc]` plus, pair by pair and for each the input channels of `oc`'s group in order,
/// `w[oc, ci, tap] · xt[in·c + group·cg + ci]` (fused). Blocks of eight output
/// channels are taken four at a time so that four independent chains are in flight; a last
/// group of fewer than four repeats its last block (the same values written twice).
#[inline(always)]
fn blocks(geo: &Geometry<'_>, bias: &[f32], wt: &[f32], xt: &[f32], acc: &mut [f32]) {
    let Geometry {
        pairs,
        starts,
        quads,
        c,
        m,
        cg,
        mg,
        kl,
        p_in,
        p_out,
    } = *geo;
    debug_assert!(xt.len() >= p_in * c && acc.len() >= p_out * m);
    let total = m / L;
    for b0 in (0..total).step_by(4) {
        // Block k of the four: its index and its group's first input channel.
        let block = |k: usize| {
            let blk = (b0 + k).min(total - 1);
            (blk, blk * L / mg * cg)
        };
        let bs = [block(0), block(1), block(2), block(3)];
        let mut o = 0;
        while o < p_out {
            if let Some(d) = quads[o] {
                // Four positions of one row: each weight load serves four multiply-adds.
                for pair in [[bs[0], bs[1]], [bs[2], bs[3]]] {
                    let quad = Quad { o, d, pair };
                    quad_blocks(geo, &quad, bias, wt, xt, acc);
                }
                o += 4;
                continue;
            }
            let b = |k: usize| lanes(bias, bs[k].0 * L);
            let mut a = [b(0), b(1), b(2), b(3)];
            for &(tap, ip) in &pairs[starts[o]..starts[o + 1]] {
                let w = |k: usize| (bs[k].0 * kl + tap) * cg * L;
                let x = |k: usize| ip * c + bs[k].1;
                let (ws, xs) = ([w(0), w(1), w(2), w(3)], [x(0), x(1), x(2), x(3)]);
                assert!(
                    ws.iter().all(|&w| w + cg * L <= wt.len()),
                    "weights out of bounds"
                );
                assert!(
                    xs.iter().all(|&x| x + cg <= xt.len()),
                    "inputs out of bounds"
                );
                for ci in 0..cg {
                    for k in 0..4 {
                        // SAFETY: ci < cg; the block's cg·L weights and cg inputs lie in wt
                        // and xt (asserted above).
                        let (wv, xv) = unsafe {
                            (
                                wt.get_unchecked(ws[k] + ci * L..ws[k] + ci * L + L),
                                *xt.get_unchecked(xs[k] + ci),
                            )
                        };
                        for l in 0..L {
                            a[k][l] = fma(wv[l], xv, a[k][l]);
                        }
                    }
                }
            }
            for (ak, &(blk, _)) in a.iter().zip(&bs) {
                acc[o * m + blk * L..][..L].copy_from_slice(ak);
            }
            o += 1;
        }
    }
}

/// Per output position `o`, `Some(d)` when positions `o..o + 4` have the same taps, each
/// reading an input `d` further than the previous position's (four interior outputs of one
/// row, `d` the stride), else None.
fn quad_steps(pairs: &[(usize, usize)], starts: &[usize]) -> Vec<Option<usize>> {
    let p_out = starts.len() - 1;
    let at = |o: usize| &pairs[starts[o]..starts[o + 1]];
    (0..p_out)
        .map(|o| {
            if o + 4 > p_out || at(o).is_empty() {
                return None;
            }
            let d = at(o + 1)[..].first()?.1.checked_sub(at(o)[0].1)?;
            (1..4)
                .all(|j| {
                    at(o + j).len() == at(o).len()
                        && at(o)
                            .iter()
                            .zip(at(o + j))
                            .all(|(a, b)| a.0 == b.0 && b.1 == a.1 + j * d)
                })
                .then_some(d)
        })
        .collect()
}

/// Four positions from `o`, inputs `d` apart, and two blocks (index, group's first input
/// channel) of [`quad_blocks`].
struct Quad {
    o: usize,
    d: usize,
    pair: [(usize, usize); 2],
}

/// [`blocks`] for positions `o..o + 4` of `q` (same taps, inputs `d` apart) and two blocks
/// of output channels: eight chains, each weight vector loaded once for four positions. The
/// same multiply-adds in the same order as one position at a time.
#[inline(always)]
fn quad_blocks(
    geo: &Geometry<'_>,
    q: &Quad,
    bias: &[f32],
    wt: &[f32],
    xt: &[f32],
    acc: &mut [f32],
) {
    let Geometry {
        pairs,
        starts,
        c,
        m,
        cg,
        kl,
        ..
    } = *geo;
    let Quad { o, d, pair } = *q;
    let mut a = [[0f32; L]; 8];
    for (b, &(blk, _)) in pair.iter().enumerate() {
        for j in 0..4 {
            a[b * 4 + j] = lanes(bias, blk * L);
        }
    }
    let dc = d * c;
    for &(tap, ip) in &pairs[starts[o]..starts[o + 1]] {
        // Offsets of the two blocks' weights for this tap and of their inputs at the first
        // position (the others are `dc`, `2·dc`, `3·dc` further).
        let w = |b: usize| (pair[b].0 * kl + tap) * cg * L;
        let x = |b: usize| ip * c + pair[b].1;
        let (ws, xs) = ([w(0), w(1)], [x(0), x(1)]);
        assert!(
            ws.iter().all(|&w| w + cg * L <= wt.len()),
            "weights out of bounds"
        );
        assert!(
            xs.iter().all(|&x| x + 3 * dc + cg <= xt.len()),
            "inputs out of bounds"
        );
        for ci in 0..cg {
            for b in 0..2 {
                // SAFETY: ci < cg and the block's cg·L weights lie in wt (asserted above).
                let wv = unsafe { wt.get_unchecked(ws[b] + ci * L..ws[b] + ci * L + L) };
                for j in 0..4 {
                    // SAFETY: ci < cg and the four positions' cg inputs lie in xt (asserted
                    // above).
                    let xv = unsafe { *xt.get_unchecked(xs[b] + j * dc + ci) };
                    let ak = &mut a[b * 4 + j];
                    for l in 0..L {
                        ak[l] = fma(wv[l], xv, ak[l]);
                    }
                }
            }
        }
    }
    for (b, &(blk, _)) in pair.iter().enumerate() {
        for j in 0..4 {
            acc[(o + j) * m + blk * L..][..L].copy_from_slice(&a[b * 4 + j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grouped_suits;
    use crate::conv_tests::{case, max_abs_diff, outputs};

    /// Grouped Convs this path serves (groups of 4 to 16 input channels, 8 or 16 output
    /// channels per group, strides, dilation, asymmetric padding, 1×1 and 1×3 kernels,
    /// block counts that are not a multiple of four, rows of four interior outputs) against
    /// the direct-loop reference.
    #[test]
    fn grouped_channels_last_matches_the_reference() {
        let cases = [
            case([2, 16, 2, 2], 16, [3, 3], [1, 1], [1, 1], [1; 4], 2, true),
            case([2, 48, 8, 8], 48, [3, 3], [2, 2], [1, 1], [1; 4], 6, true),
            case([2, 24, 5, 3], 48, [3, 3], [1, 1], [2, 2], [2; 4], 3, true),
            case(
                [1, 12, 4, 4],
                24,
                [1, 3],
                [1, 1],
                [1, 1],
                [0, 1, 0, 1],
                3,
                false,
            ),
            case(
                [3, 32, 4, 4],
                32,
                [3, 3],
                [1, 1],
                [1, 1],
                [0, 1, 2, 1],
                2,
                true,
            ),
            case([2, 16, 4, 4], 16, [1, 1], [1, 1], [1, 1], [0; 4], 2, true),
            case(
                [2, 440, 2, 2],
                440,
                [3, 3],
                [1, 1],
                [1, 1],
                [1; 4],
                55,
                true,
            ),
            // Rows with four interior outputs (the four-position path) beside borders.
            case([2, 24, 8, 8], 24, [3, 3], [1, 1], [1, 1], [1; 4], 3, true),
            case(
                [1, 64, 8, 7],
                64,
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1, 0, 0],
                4,
                true,
            ),
        ];
        for (i, cs) in cases.iter().enumerate() {
            let [_, c, h, w] = cs.x;
            let oh = (h + cs.pads[0] + cs.pads[2] - cs.dil[0] * (cs.k[0] - 1) - 1) / cs.stride[0];
            let ow = (w + cs.pads[1] + cs.pads[3] - cs.dil[1] * (cs.k[1] - 1) - 1) / cs.stride[1];
            assert!(
                grouped_suits(c, cs.m, cs.g, (oh + 1) * (ow + 1)),
                "case {i} takes another path"
            );
            let (got, want) = outputs(cs, 40 + i as u64, false);
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-4, "case {i}: max abs diff {d}");
        }
    }

    /// Shapes it leaves to the other paths: depthwise (one channel per group), one group,
    /// groups whose output channels are not a multiple of eight, and large planes.
    /// Weights blocked when the plan is loaded give the per-call blocking's bits, with and
    /// without an epilogue, through the fused Conv; shapes it does not serve are refused.
    #[test]
    fn weights_blocked_once_equal_weights_blocked_per_call_bitwise() {
        use crate::{eval, eval_fused, ConvActivation, FusedOp, HeldConvWeight};
        use std::sync::Arc;
        use tessera_ir::op::ConvAttrs;
        use tessera_ir::{Op, Tensor};
        let vals = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>();
        let a = ConvAttrs {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1; 4],
            group: 4,
            depthwise: false,
        };
        let (xs, ws) = ([2, 16, 3, 3], [32, 4, 3, 3]);
        assert!(super::grouped_conv_suits(&xs, &ws, &a));
        let x = Tensor::f32(xs.to_vec(), vals(2 * 16 * 9, 0.37));
        let wv = vals(32 * 4 * 9, 0.11);
        let w = Tensor::f32(ws.to_vec(), wv.clone());
        let b = Tensor::f32(vec![32], vals(32, 0.7));
        let packed = super::PackedGroupedWeight::pack(&ws, &wv, 4).expect("blocks");
        assert_eq!(packed.bytes(), 32 * 4 * 9 * 4);
        let held = Some(HeldConvWeight::Grouped(Arc::new(packed)));
        for act in [None, Some(ConvActivation::Relu)] {
            let op = |held| FusedOp::ConvEpilogue {
                attrs: a.clone(),
                held,
                bias: true,
                scale: false,
                shift: false,
                residual: false,
                act,
            };
            let plain = eval_fused(&op(None), &[&x, &w, &b]).expect("plain");
            let blocked = eval_fused(&op(held.clone()), &[&x, &b]).expect("blocked");
            let bits = |t: &Tensor| -> Vec<u32> {
                t.as_f32()
                    .expect("f32")
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&plain), bits(&blocked));
            if act.is_none() {
                let unfused = &eval(&Op::Conv(a.clone()), &[&x, &w, &b]).expect("Conv")[0];
                assert_eq!(bits(unfused), bits(&blocked));
            }
        }
        // Eight output channels per group are the least it blocks; another group count is
        // an error, not a wrong answer.
        assert!(super::PackedGroupedWeight::pack(&[12, 4, 3, 3], &vals(432, 0.1), 4).is_err());
        let other = ConvAttrs { group: 2, ..a };
        let op = FusedOp::ConvEpilogue {
            attrs: other,
            held,
            bias: true,
            scale: false,
            shift: false,
            residual: false,
            act: None,
        };
        let x8 = Tensor::f32(xs.to_vec(), vals(2 * 16 * 9, 0.37));
        assert!(eval_fused(&op, &[&x8, &b]).is_err());
    }

    #[test]
    fn grouped_suits_only_few_channel_groups_on_small_planes() {
        assert!(grouped_suits(440, 440, 55, 4));
        assert!(!grouped_suits(48, 48, 48, 4));
        assert!(!grouped_suits(64, 64, 1, 4));
        assert!(!grouped_suits(128, 128, 32, 4));
        assert!(!grouped_suits(48, 48, 6, 256));
        assert!(!grouped_suits(512, 512, 16, 4));
    }
}
