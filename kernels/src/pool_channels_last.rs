//! f32 MaxPool and AveragePool sums over small planes, channels innermost (the depthwise
//! Conv's layout, `conv_depthwise.rs`): per image, X is transposed to `[position, channel]`
//! with the channels padded to whole 16-lane blocks; every output position starts at −∞
//! (or 0) and takes, tap by tap in ascending order, the maximum with (or the sum of) its
//! input rows over all channels at once; the result is transposed back. The plane-by-plane
//! loop (`pool.rs`, `max_pool_flat`) spends more on copying each plane into padded phase
//! planes than on the maxima when a plane has a few outputs: GoogLeNet's 3×3 pools on
//! `[2, 832, 2, 2]` took 62 µs there, about 40 ns per plane of 4 outputs.
//!
//! Same taps in the same order and the same select or add as the plane loops, so the same
//! result (a NaN input is never taken by the maximum; −∞ padding never wins).
use super::conv_taps::{position_pairs, TapTable};
use super::simd::vectorized;
use super::transpose2d::transpose_pitched;

/// Output planes at most this large take this path.
pub(crate) const SMALL_POOL_PLANE: usize = 64;

/// Channels below which the transposes cost more than they save.
pub(crate) const MIN_POOL_CHANNELS: usize = 8;

/// Lanes per block of channels.
const L: usize = 16;

/// Max pool (`max`) or window sums of `n` images of `c` channels (`x`: `[n, c, p_in]`)
/// over the windows of `taps`; returns `[n, c, P_out]`.
pub(crate) fn pool_channels_last(
    taps: &TapTable,
    x: &[f32],
    (n, c, p_in): (usize, usize, usize),
    max: bool,
) -> Vec<f32> {
    let p_out = taps.plane;
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    let mut out = vec![init; n * c * p_out];
    if p_out == 0 || c == 0 || p_in == 0 {
        return out;
    }
    let cp = c.next_multiple_of(L);
    // Per output position, the offsets of the input rows it reads, in ascending tap order.
    let (pairs, starts) = position_pairs(taps, cp);
    let mut xt = vec![0f32; p_in * cp];
    let mut acc = vec![0f32; p_out * cp];
    vectorized(
        #[inline(always)]
        || {
            for (xi, dst) in x
                .chunks_exact(c * p_in)
                .zip(out.chunks_exact_mut(c * p_out))
            {
                transpose_pitched(xi, p_in, &mut xt, cp, c, p_in);
                for (o, row) in acc.chunks_exact_mut(cp).enumerate() {
                    let pairs = &pairs[starts[o]..starts[o + 1]];
                    if max {
                        position::<true>(pairs, &xt, row);
                    } else {
                        position::<false>(pairs, &xt, row);
                    }
                }
                transpose_pitched(&acc, cp, dst, p_out, p_out, c);
            }
        },
    );
    out
}

/// One output position's maxima (`MAX`) or sums over all channels (`row`, `cp` long) from
/// the input rows at the offsets `pairs[..].1` of `xt`: four 16-lane blocks at a time kept
/// in registers across the taps (a running maximum in memory was stored and reloaded per
/// tap).
#[inline(always)]
fn position<const MAX: bool>(pairs: &[(usize, usize)], xt: &[f32], row: &mut [f32]) {
    let init = if MAX { f32::NEG_INFINITY } else { 0.0 };
    let cp = row.len();
    let quads = cp / (4 * L) * (4 * L);
    for b in (0..quads).step_by(4 * L) {
        let mut a = [[init; L]; 4];
        for &(_, xo) in pairs {
            let s = &xt[xo + b..][..4 * L];
            for (k, ak) in a.iter_mut().enumerate() {
                step::<MAX>(ak, &s[k * L..][..L]);
            }
        }
        for (d, ak) in row[b..b + 4 * L].chunks_exact_mut(L).zip(&a) {
            d.copy_from_slice(ak);
        }
    }
    for b in (quads..cp).step_by(L) {
        let mut a = [init; L];
        for &(_, xo) in pairs {
            step::<MAX>(&mut a, &xt[xo + b..][..L]);
        }
        row[b..b + L].copy_from_slice(&a);
    }
}

/// `a = max(a, s)` by the plane loop's select (`MAX`), else `a + s`, lane by lane.
#[inline(always)]
fn step<const MAX: bool>(a: &mut [f32; L], s: &[f32]) {
    let s: &[f32; L] = s.try_into().expect("an L-long slice");
    for l in 0..L {
        a[l] = if MAX {
            if s[l] > a[l] {
                s[l]
            } else {
                a[l]
            }
        } else {
            a[l] + s[l]
        };
    }
}
