//! Resize: separable interpolation, one resized axis at a time in ascending order, as the
//! ONNX reference (`onnx/reference/ops/op_resize.py`) computes it. For every output
//! coordinate of an axis the filter taps (input index, weight) are computed in f64 from the
//! coordinate transformation and the mode's coefficients; the pass then sums the taps over
//! contiguous inner rows in f32. Nearest mode on integer and boolean tensors copies the
//! heaviest tap.
use super::resize_planes::{self, FlatTaps};
use super::{describe, make, KResult};
use tessera_ir::op::{ResizeAttrs, ResizeCoord, ResizeMode, ResizeNearest};
use tessera_ir::{Tensor, TensorData};

/// The taps of one output coordinate: (input index, weight), zero weights dropped; `None`
/// when the coordinate lies outside the crop region (the extrapolation value).
pub(super) type Taps = Option<Vec<(usize, f32)>>;

/// The input coordinate output coordinate `y` maps to, or None when it is extrapolated.
fn source(a: &ResizeAttrs, k: usize, y: f64, input: usize, out: usize) -> Option<f64> {
    let scale = a.scales[k];
    let (inw, outw) = (input as f64, scale * input as f64);
    Some(match a.coord {
        ResizeCoord::AlignCorners if outw == 1.0 => 0.0,
        ResizeCoord::AlignCorners => y * (inw - 1.0) / (outw - 1.0),
        ResizeCoord::Asymmetric => y / scale,
        ResizeCoord::TfCropAndResize => {
            let n = a.axes.len();
            let (start, end) = (a.roi[k], a.roi[n + k]);
            let x = if outw == 1.0 {
                (end - start) * (inw - 1.0) / 2.0
            } else {
                y * (end - start) * (inw - 1.0) / (outw - 1.0)
            } + start * (inw - 1.0);
            if x < 0.0 || x > inw - 1.0 {
                return None;
            }
            x
        }
        ResizeCoord::PytorchHalfPixel if outw == 1.0 => -0.5,
        ResizeCoord::PytorchHalfPixel | ResizeCoord::HalfPixel => (y + 0.5) / scale - 0.5,
        ResizeCoord::HalfPixelSymmetric => {
            let adjustment = out as f64 / outw;
            let offset = inw / 2.0 * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
    })
}

/// The cubic convolution kernel of coefficient `a` at distance `x`.
fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// The mode's coefficients for `ratio` in (0, 1] (the distance past the left neighbour).
fn coeffs(a: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    let normalised = |c: Vec<f64>| {
        let s: f64 = c.iter().sum();
        c.into_iter().map(|v| v / s).collect()
    };
    match a.mode {
        ResizeMode::Nearest if ratio == 1.0 => vec![0.0, 1.0],
        ResizeMode::Nearest => {
            let up = match a.nearest {
                ResizeNearest::RoundPreferFloor => ratio > 0.5,
                ResizeNearest::RoundPreferCeil => ratio >= 0.5,
                ResizeNearest::Floor => false,
                ResizeNearest::Ceil => true,
            };
            if up {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        ResizeMode::Linear if a.antialias => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            normalised(
                (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect(),
            )
        }
        ResizeMode::Linear => vec![1.0 - ratio, ratio],
        ResizeMode::Cubic if a.antialias => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            let coef = f64::from(a.cubic_a);
            normalised(
                (start..2 - start)
                    .map(|i| cubic(coef, s * (i as f64 - ratio)))
                    .collect(),
            )
        }
        ResizeMode::Cubic => {
            let c = f64::from(a.cubic_a);
            vec![
                cubic(c, ratio + 1.0),
                cubic(c, ratio),
                cubic(c, 1.0 - ratio),
                cubic(c, 2.0 - ratio),
            ]
        }
    }
}

/// The taps of every output coordinate of resized axis `k` (input extent `input`).
pub(super) fn axis_taps(a: &ResizeAttrs, k: usize, input: usize) -> Vec<Taps> {
    let out = a.sizes[k];
    (0..out)
        .map(|y| {
            let x = source(a, k, y as f64, input, out)?;
            let floor = x.floor();
            let ratio = if x == floor { 1.0 } else { x - floor };
            let mut c = coeffs(a, ratio, a.scales[k]);
            let n = c.len() as i64;
            // The n neighbours nearest to x, ties to the smaller index (the reference's
            // window over the edge-padded input).
            let frac = x - floor;
            let offset = if n % 2 == 0 {
                if frac == 0.0 {
                    -(n / 2)
                } else {
                    -(n / 2) + 1
                }
            } else if frac <= 0.5 {
                -((n - 1) / 2)
            } else {
                -((n - 1) / 2) + 1
            };
            let start = floor as i64 + offset;
            let last = input as i64 - 1;
            if a.exclude_outside {
                for (j, v) in c.iter_mut().enumerate() {
                    let i = start + j as i64;
                    if i < 0 || i > last {
                        *v = 0.0;
                    }
                }
                let s: f64 = c.iter().sum();
                if s != 0.0 {
                    c.iter_mut().for_each(|v| *v /= s);
                }
            }
            Some(
                c.iter()
                    .enumerate()
                    .filter(|(_, w)| **w != 0.0)
                    .map(|(j, &w)| ((start + j as i64).clamp(0, last) as usize, w as f32))
                    .collect(),
            )
        })
        .collect()
}

/// One pass over axis `axis` of `shape` (`v` its elements) into `taps.len()` outputs. Every
/// output is `0 + w₀·s₀ + w₁·s₁ + …` summed in tap order (`+ s` for a weight of 1).
pub(super) fn pass_f32(
    shape: &[usize],
    axis: usize,
    v: &[f32],
    taps: &[Taps],
    fill: f32,
) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (input, out) = (shape[axis], taps.len());
    if inner == 1 {
        return resize_planes::last_axis(outer, input, v, &FlatTaps::new(taps), fill);
    }
    let mut res = vec![0f32; outer * out * inner];
    for o in 0..outer {
        let src = &v[o * input * inner..(o + 1) * input * inner];
        for (y, t) in taps.iter().enumerate() {
            let dst = &mut res[(o * out + y) * inner..(o * out + y + 1) * inner];
            match t {
                None => dst.fill(fill),
                Some(t) => {
                    for &(i, w) in t {
                        let row = &src[i * inner..(i + 1) * inner];
                        if w == 1.0 {
                            dst.iter_mut().zip(row).for_each(|(d, s)| *d += s);
                        } else {
                            dst.iter_mut().zip(row).for_each(|(d, s)| *d += w * s);
                        }
                    }
                }
            }
        }
    }
    res
}

/// True when `taps` map each of `input` coordinates to itself with weight 1 (an axis the
/// Resize keeps: its pass would only copy).
fn identity(taps: &[Taps], input: usize) -> bool {
    taps.len() == input
        && taps.iter().enumerate().all(|(y, t)| match t.as_deref() {
            Some([(i, w)]) => *i == y && *w == 1.0,
            _ => false,
        })
}

/// Nearest-mode pass for integer and boolean elements: the heaviest tap's element.
fn pass_copy<T: Copy + Default>(
    shape: &[usize],
    axis: usize,
    v: &[T],
    taps: &[Taps],
    fill: T,
) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (input, out) = (shape[axis], taps.len());
    let mut res = Vec::with_capacity(outer * out * inner);
    for o in 0..outer {
        let src = &v[o * input * inner..(o + 1) * input * inner];
        for t in taps {
            let heaviest = t.as_ref().map(|t| {
                t.iter()
                    .fold(None::<(usize, f32)>, |m, &(i, w)| match m {
                        Some((_, mw)) if mw >= w => m,
                        _ => Some((i, w)),
                    })
                    .map(|(i, _)| i)
            });
            match heaviest {
                None => res.extend(std::iter::repeat_n(fill, inner)),
                Some(None) => res.extend(std::iter::repeat_n(T::default(), inner)),
                Some(Some(i)) => res.extend_from_slice(&src[i * inner..(i + 1) * inner]),
            }
        }
    }
    res
}

/// Resizes `x`.
pub(crate) fn resize(a: &ResizeAttrs, x: &Tensor) -> KResult<Tensor> {
    let n = a.axes.len();
    if a.sizes.len() != n || a.scales.len() != n || a.axes.iter().any(|&k| k >= x.shape.len()) {
        return Err(format!(
            "Resize axes {:?} / sizes {:?} do not fit {}",
            a.axes,
            a.sizes,
            describe(x)
        ));
    }
    for (k, &axis) in a.axes.iter().enumerate() {
        if a.axes[..k].contains(&axis) {
            return Err(format!("Resize axes {:?} repeat axis {axis}", a.axes));
        }
        if x.shape[axis] == 0 && a.sizes[k] > 0 {
            return Err(format!(
                "Resize of the empty axis {axis} of {}",
                describe(x)
            ));
        }
    }
    // Each axis is resized once, so its taps depend on X's extent alone.
    let all_taps: Vec<Vec<Taps>> = (a.axes.iter().enumerate())
        .map(|(k, &axis)| axis_taps(a, k, x.shape[axis]))
        .collect();
    if let Some(y) = image_planes(a, x, &all_taps)? {
        return Ok(y);
    }
    let mut shape = x.shape.clone();
    // The result of the passes so far (None: X itself, read in place by the first pass).
    let mut done: Option<TensorData> = None;
    for ((k, &axis), taps) in a.axes.iter().enumerate().zip(&all_taps) {
        // An axis kept as it is (batch and channels of an image Resize) needs no pass: it
        // would copy every element (as 0 + x, which also made −0 into +0).
        if identity(taps, shape[axis]) {
            continue;
        }
        let fill = a.extrapolation_value;
        let data = done.as_ref().unwrap_or(&x.data);
        done = Some(match data {
            TensorData::F32(v) => TensorData::F32(pass_f32(&shape, axis, v, taps, fill)),
            TensorData::I64(_) | TensorData::Bool(_) if a.mode != ResizeMode::Nearest => {
                return Err(format!(
                    "Resize {:?} needs a float tensor, got {}",
                    a.mode,
                    describe(x)
                ))
            }
            TensorData::I64(v) => TensorData::I64(pass_copy(&shape, axis, v, taps, fill as i64)),
            TensorData::Bool(v) => TensorData::Bool(pass_copy(&shape, axis, v, taps, fill != 0.0)),
        });
        shape[axis] = a.sizes[k];
    }
    make(x.dtype, shape, done.unwrap_or_else(|| x.data.clone()))
}

/// An f32 Resize of the last two axes alone, height before width (every other axis kept):
/// the planes in one sweep ([`resize_planes::planes`]), or None for any other Resize.
/// `all_taps` holds every entry of `a.axes`'s taps.
pub(super) fn image_planes(
    a: &ResizeAttrs,
    x: &Tensor,
    all_taps: &[Vec<Taps>],
) -> KResult<Option<Tensor>> {
    let r = x.shape.len();
    let TensorData::F32(v) = &x.data else {
        return Ok(None);
    };
    if r < 2 || x.shape.contains(&0) {
        return Ok(None);
    }
    let mut resized = Vec::with_capacity(2);
    for (&axis, taps) in a.axes.iter().zip(all_taps) {
        if !identity(taps, x.shape[axis]) {
            resized.push((axis, taps));
        }
    }
    let [(ah, th), (aw, tw)] = &resized[..] else {
        return Ok(None);
    };
    if (*ah, *aw) != (r - 2, r - 1) {
        return Ok(None);
    }
    let (ty, tx) = (FlatTaps::new(th), FlatTaps::new(tw));
    let (h, w) = (x.shape[r - 2], x.shape[r - 1]);
    let planes: usize = x.shape[..r - 2].iter().product();
    let y = resize_planes::planes(planes, [h, w], v, [&ty, &tx], a.extrapolation_value);
    let mut shape = x.shape.clone();
    shape[r - 2] = th.len();
    shape[r - 1] = tw.len();
    make(x.dtype, shape, TensorData::F32(y)).map(Some)
}
