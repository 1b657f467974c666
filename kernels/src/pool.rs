//! MaxPool (floats and integers) and AveragePool (floats) over the spatial axes `2..`:
//! f32 pools on planes of at most 64 outputs with several channels run all channels at once
//! (`pool_channels_last.rs`); other 1-D and 2-D f32 max pools as a pass over rows then one
//! over columns (`pool_separable.rs`), f32 sums as a depthwise Conv with unit weights
//! (`conv_depthwise_flat.rs`); the rest walk each input plane once per kernel tap, one
//! output row at a time.
use super::conv_depthwise_flat::depthwise_flat;
use super::conv_depthwise_flat::FlatGeometry;
use super::conv_epilogue::Epilogue;
use super::conv_taps::TapTable;
use super::pool_channels_last::{pool_channels_last, MIN_POOL_CHANNELS, SMALL_POOL_PLANE};
use super::pool_separable::max_pool_separable;
use super::simd::vectorized;
use super::window::Window;
use super::{describe, make, KResult};
use tessera_ir::op::{PoolAttrs, PoolKind};
use tessera_ir::spec::window_out_extent;
use tessera_ir::{Tensor, TensorData};

/// Pooling.
pub(crate) fn pool(a: &PoolAttrs, x: &Tensor) -> KResult<Tensor> {
    let xs = &x.shape;
    if xs.len() < 3 {
        return Err(format!("X {} must be [N, C, D1..]", describe(x)));
    }
    let s = xs.len() - 2;
    if a.kernel.len() != s
        || a.strides.len() != s
        || a.dilations.len() != s
        || a.pads.len() != 2 * s
    {
        return Err(format!("attributes do not fit {s} spatial axes: {a:?}"));
    }
    let mut out_sp = Vec::with_capacity(s);
    for i in 0..s {
        let pads = (a.pads[i], a.pads[s + i]);
        let (k, st, d) = (a.kernel[i], a.strides[i], a.dilations[i]);
        out_sp.push(
            window_out_extent(xs[2 + i], k, st, d, pads, a.ceil_mode)
                .ok_or_else(|| format!("kernel {:?} does not fit input {xs:?}", a.kernel))?,
        );
    }
    let win = Window {
        drive: out_sp.clone(),
        other: xs[2..].to_vec(),
        kernel: a.kernel.clone(),
        strides: a.strides.clone(),
        dilations: a.dilations.clone(),
        pads: a.pads[..s].to_vec(),
    };
    let planes = xs[0] * xs[1];
    let p_in = win.other_plane();
    // Small output planes of several channels: all channels at once.
    let channels_last = win.drive_plane() <= SMALL_POOL_PLANE && xs[1] >= MIN_POOL_CHANNELS;
    let data = match (a.kind, &x.data) {
        (PoolKind::Max, TensorData::F32(v)) if channels_last => TensorData::F32(
            pool_channels_last(&TapTable::new(&win), v, (xs[0], xs[1], p_in), true),
        ),
        (PoolKind::Max, TensorData::F32(v)) => match max_pool_separable(&win, v, planes) {
            Some(out) => TensorData::F32(out),
            None => TensorData::F32(max_pool(&win, v, planes, f32::NEG_INFINITY)),
        },
        (PoolKind::Max, TensorData::I64(v)) => TensorData::I64(max_pool(&win, v, planes, i64::MIN)),
        (PoolKind::Average, TensorData::F32(v)) => {
            let sums = if channels_last {
                pool_channels_last(&TapTable::new(&win), v, (xs[0], xs[1], p_in), false)
            } else {
                sum_pool(&win, v, planes)
            };
            let counts = counts(a, &win);
            let p = win.drive_plane();
            TensorData::F32(
                sums.iter()
                    .enumerate()
                    .map(|(i, &v)| v / counts[i % p])
                    .collect(),
            )
        }
        _ => return Err(format!("unsupported input {}", describe(x))),
    };
    let mut shape = xs[..2].to_vec();
    shape.extend(out_sp);
    make(x.dtype, shape, data)
}

/// Applies `f(dst_row_slice, src, stride)` for every valid run of every kernel tap.
fn taps<T: Copy>(
    win: &Window,
    x: &[T],
    planes: usize,
    init: T,
    f: impl Fn(&mut [T], &[T], usize),
) -> Vec<T> {
    let (p_out, p_in, kl) = (win.drive_plane(), win.other_plane(), win.kernel_len());
    // One table of runs per tap for all planes (no per-plane row geometry).
    let table = TapTable::new(win);
    let stride = table.stride;
    let mut out = vec![init; planes * p_out];
    for pi in 0..planes {
        let src_plane = &x[pi * p_in..(pi + 1) * p_in];
        let dst = &mut out[pi * p_out..(pi + 1) * p_out];
        for kp in 0..kl {
            for r in table.runs(kp) {
                f(&mut dst[r.dst..r.dst + r.len], &src_plane[r.src..], stride);
            }
        }
    }
    out
}

pub(super) fn max_pool<T: Copy + PartialOrd>(
    win: &Window,
    x: &[T],
    planes: usize,
    lowest: T,
) -> Vec<T> {
    vectorized(
        #[inline(always)]
        || {
            taps(win, x, planes, lowest, |d, s, stride| {
                // A select, not a conditional store, so the loop vectorises (a NaN input
                // never replaces the running maximum either way); the unit and 2 strides
                // get their own loops so the compiler sees a constant stride.
                #[inline(always)]
                fn keep_max<T: Copy + PartialOrd>(d: &mut T, v: T) {
                    *d = if v > *d { v } else { *d };
                }
                match stride {
                    1 => d.iter_mut().zip(s).for_each(|(dv, &v)| keep_max(dv, v)),
                    2 => d
                        .iter_mut()
                        .zip(s.chunks(2))
                        .for_each(|(dv, v)| keep_max(dv, v[0])),
                    _ => d
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, dv)| keep_max(dv, s[j * stride])),
                }
            })
        },
    )
}

/// Window sums of every plane: 1-D and 2-D windows as a depthwise Conv with unit weights
/// (`conv_depthwise_flat.rs`: one multiply-add by 1 is the add, exactly; taps in the same
/// order), others run by run from the tap table.
fn sum_pool(win: &Window, x: &[f32], planes: usize) -> Vec<f32> {
    if let Some(geo) = FlatGeometry::of_window(win) {
        let ones = vec![1f32; win.kernel_len()];
        return depthwise_flat(&geo, x, &ones, None, planes, 1, Epilogue::default());
    }
    vectorized(
        #[inline(always)]
        || {
            taps(win, x, planes, 0.0, |d, s, stride| {
                for (j, dv) in d.iter_mut().enumerate() {
                    *dv += s[j * stride];
                }
            })
        },
    )
}

/// The divisor of every output position: the window elements inside the input, or with
/// `count_include_pad` inside the padded input (a ceil-mode window is cut at the end
/// padding, as onnxruntime does).
fn counts(a: &PoolAttrs, win: &Window) -> Vec<f32> {
    let s = win.drive.len();
    // Per axis: how many taps of each output position fall in range.
    let per_axis: Vec<Vec<usize>> = (0..s)
        .map(|i| {
            let (lo_pad, hi_pad) = (a.pads[i], a.pads[s + i]);
            (0..win.drive[i])
                .map(|o| {
                    (0..win.kernel[i])
                        .filter(|&k| {
                            let p = o * win.strides[i] + k * win.dilations[i];
                            if a.count_include_pad {
                                p < win.other[i] + lo_pad + hi_pad
                            } else {
                                p >= lo_pad && p - lo_pad < win.other[i]
                            }
                        })
                        .count()
                })
                .collect()
        })
        .collect();
    let p = win.drive_plane();
    let mut out = Vec::with_capacity(p);
    let mut idx = vec![0usize; s];
    for _ in 0..p {
        out.push(
            idx.iter()
                .zip(&per_axis)
                .map(|(&o, c)| c[o])
                .product::<usize>() as f32,
        );
        for ax in (0..s).rev() {
            idx[ax] += 1;
            if idx[ax] < win.drive[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pool;
    use tessera_ir::op::{PoolAttrs, PoolKind};
    use tessera_ir::Tensor;

    /// Direct 2-D max pool (NaN inputs are skipped, as `v > max` never holds for them).
    fn direct(x: &[f32], [n, h, w]: [usize; 3], k: usize, s: usize, p: usize) -> Vec<f32> {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut out = Vec::new();
        for pl in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (oy * s + ky, ox * s + kx);
                            if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                continue;
                            }
                            let v = x[(pl * h + iy - p) * w + ix - p];
                            if v > m {
                                m = v;
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    fn max_attrs(k: usize, s: usize, p: usize, ceil_mode: bool) -> PoolAttrs {
        PoolAttrs {
            kind: PoolKind::Max,
            kernel: vec![k; 2],
            strides: vec![s; 2],
            dilations: vec![1; 2],
            pads: vec![p; 4],
            ceil_mode,
            count_include_pad: false,
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Every path (plane by plane with 3 channels or 99 outputs; channels innermost with 8,
    /// 40 and 72 channels on planes of at most 64 outputs, padded to 16, 48 and 80 lanes).
    #[test]
    fn max_pool_matches_a_direct_loop_for_strides_1_2_3() {
        for (c, h, w) in [(3, 9, 11), (8, 5, 6), (40, 5, 6), (72, 7, 7)] {
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| match i % 17 {
                    5 => f32::NAN,
                    _ => ((i * 7919) % 101) as f32 - 50.0,
                })
                .collect();
            for (k, s, p) in [(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 3, 1)] {
                let y = pool(
                    &max_attrs(k, s, p, false),
                    &Tensor::f32(vec![2, c, h, w], x.clone()),
                )
                .unwrap();
                let want = direct(&x, [2 * c, h, w], k, s, p);
                assert_eq!(
                    bits(y.as_f32().unwrap()),
                    bits(&want),
                    "{c}×{h}×{w}: k {k} s {s} p {p}"
                );
            }
        }
    }

    /// Average pools on the 2-D paths (plane by plane as a depthwise Conv with unit weights;
    /// channels innermost on small planes of 24 channels) against a direct sum over the
    /// window, with and without the padding in the divisor.
    #[test]
    fn average_pools_match_a_direct_loop() {
        for (c, h, w) in [(3, 9, 11), (24, 5, 6), (24, 12, 12)] {
            let x: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7919) % 101) as f32 / 8.0 - 6.0)
                .collect();
            for (k, s, p) in [(3, 1, 1), (3, 2, 1), (2, 2, 0)] {
                for include in [false, true] {
                    let a = PoolAttrs {
                        kind: PoolKind::Average,
                        count_include_pad: include,
                        ..max_attrs(k, s, p, false)
                    };
                    let y = pool(&a, &Tensor::f32(vec![2, c, h, w], x.clone())).unwrap();
                    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
                    let mut want = Vec::new();
                    for plane in x.chunks_exact(h * w) {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let (mut sum, mut n) = (0f32, 0);
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let (iy, ix) = (oy * s + ky, ox * s + kx);
                                        if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                            n += usize::from(include);
                                            continue;
                                        }
                                        sum += plane[(iy - p) * w + ix - p];
                                        n += 1;
                                    }
                                }
                                want.push(sum / n as f32);
                            }
                        }
                    }
                    let got = y.as_f32().unwrap();
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= 1e-6 * (1.0 + e.abs()),
                            "{c}×{h}×{w} k {k} s {s} p {p} include {include} at {i}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// With ceil_mode (windows past the end of the input), the channels-innermost path gives
    /// the bits of the plane loops, which a one-channel pool takes (max and average).
    #[test]
    fn ceil_mode_pools_agree_between_the_paths() {
        let (c, h, w) = (24, 8, 7);
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919) % 103) as f32 - 51.0)
            .collect();
        for (k, s, p, kind) in [
            (3, 2, 0, PoolKind::Max),
            (3, 1, 1, PoolKind::Max),
            (2, 2, 1, PoolKind::Max),
            (3, 2, 0, PoolKind::Average),
            (2, 2, 1, PoolKind::Average),
        ] {
            let a = PoolAttrs {
                kind,
                ..max_attrs(k, s, p, true)
            };
            let all = pool(&a, &Tensor::f32(vec![1, c, h, w], x.clone())).unwrap();
            let mut per_plane = Vec::new();
            for plane in x.chunks_exact(h * w) {
                let y = pool(&a, &Tensor::f32(vec![1, 1, h, w], plane.to_vec())).unwrap();
                per_plane.extend_from_slice(y.as_f32().unwrap());
            }
            assert_eq!(
                bits(all.as_f32().unwrap()),
                bits(&per_plane),
                "{kind:?} k {k} s {s} p {p}"
            );
        }
    }
}
