//! Resize passes over flattened taps: the innermost axis alone, and the last two axes of
//! image planes in one sweep (a bilinear upsampling of segmentation logits, LR-ASPP's and
//! DeepLabV3's `[2, 5, 8, 8] → [2, 5, 64, 64]`: 270 µs through the generic passes, whose
//! per-coordinate tap lists and short rows cost 6–8 ns an output element).
//!
//! Every output is the generic passes' sum, `0 + w₀·s₀ + w₁·s₁ + …` in tap order (`+ s` for
//! a weight of 1), first along the height (into one row of the plane), then along the width,
//! so the result is theirs bit for bit.
use super::resize::Taps;

/// The taps of every output coordinate of one axis, flattened: output `y` sums entries
/// `a..b` of `index` and `weight` for `span[y] = Some((a, b))`, or takes the extrapolation
/// value for `None`.
pub(super) struct FlatTaps {
    index: Vec<usize>,
    weight: Vec<f32>,
    span: Vec<Option<(usize, usize)>>,
    /// When every output coordinate has exactly two taps (linear interpolation away from
    /// exact input coordinates): per coordinate, the taps' indices and weights.
    pairs: Option<Vec<Pair>>,
}

/// Two taps: `(0 + w0·s[i0]) + w1·s[i1]` (a weight of 1 multiplies exactly, so this is the
/// generic sum's value).
#[derive(Clone, Copy)]
struct Pair {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

impl FlatTaps {
    /// Flattens per-coordinate taps.
    pub(super) fn new(taps: &[Taps]) -> FlatTaps {
        let mut index = Vec::with_capacity(2 * taps.len());
        let mut weight = Vec::with_capacity(2 * taps.len());
        let span = taps
            .iter()
            .map(|t| {
                t.as_ref().map(|t| {
                    let first = index.len();
                    for &(i, w) in t {
                        index.push(i);
                        weight.push(w);
                    }
                    (first, index.len())
                })
            })
            .collect::<Vec<_>>();
        let pairs = span
            .iter()
            .map(|sp| match *sp {
                Some((a, b)) if b == a + 2 => Some(Pair {
                    i0: index[a],
                    i1: index[a + 1],
                    w0: weight[a],
                    w1: weight[a + 1],
                }),
                _ => None,
            })
            .collect();
        FlatTaps {
            index,
            weight,
            span,
            pairs,
        }
    }

    /// Output coordinates.
    fn len(&self) -> usize {
        self.span.len()
    }

    /// `dst[y]` from the row `src` (one element per input coordinate), every `y`.
    #[inline(always)]
    fn row(&self, src: &[f32], dst: &mut [f32], fill: f32) {
        if let Some(pairs) = &self.pairs {
            for (d, p) in dst.iter_mut().zip(pairs) {
                *d = (0.0 + p.w0 * src[p.i0]) + p.w1 * src[p.i1];
            }
            return;
        }
        for (d, sp) in dst.iter_mut().zip(&self.span) {
            *d = match *sp {
                None => fill,
                Some((a, b)) => {
                    let mut acc = 0f32;
                    for (&i, &w) in self.index[a..b].iter().zip(&self.weight[a..b]) {
                        let s = src[i];
                        acc += if w == 1.0 { s } else { w * s };
                    }
                    acc
                }
            };
        }
    }
}

/// The innermost axis of `outer` rows of `input` elements, resized by `taps`.
pub(super) fn last_axis(
    outer: usize,
    input: usize,
    v: &[f32],
    taps: &FlatTaps,
    fill: f32,
) -> Vec<f32> {
    let out = taps.len();
    let mut res = vec![0f32; outer * out];
    for (src, dst) in v.chunks_exact(input).zip(res.chunks_exact_mut(out)) {
        taps.row(src, dst, fill);
    }
    res
}

/// `planes` planes of `[h, w]` elements resized by `ty` along the height, then `tx` along
/// the width: per output row, the height's taps sum whole input rows into one row of `w`
/// values (vectorised over the row), whose width taps give the output row.
pub(super) fn planes(
    planes: usize,
    [h, w]: [usize; 2],
    v: &[f32],
    [ty, tx]: [&FlatTaps; 2],
    fill: f32,
) -> Vec<f32> {
    let (oh, ow) = (ty.len(), tx.len());
    let mut res = vec![0f32; planes * oh * ow];
    let mut tmp = vec![0f32; w];
    for (src, dst) in v.chunks_exact(h * w).zip(res.chunks_exact_mut(oh * ow)) {
        for (y, (sp, out)) in ty.span.iter().zip(dst.chunks_exact_mut(ow)).enumerate() {
            if let Some(p) = ty.pairs.as_ref().map(|p| p[y]) {
                let (r0, r1) = (&src[p.i0 * w..][..w], &src[p.i1 * w..][..w]);
                for (d, (&a, &b)) in tmp.iter_mut().zip(r0.iter().zip(r1)) {
                    *d = (0.0 + p.w0 * a) + p.w1 * b;
                }
                tx.row(&tmp, out, fill);
                continue;
            }
            match *sp {
                None => tmp.fill(fill),
                Some((a, b)) => {
                    tmp.fill(0.0);
                    for (&i, &wt) in ty.index[a..b].iter().zip(&ty.weight[a..b]) {
                        let row = &src[i * w..(i + 1) * w];
                        if wt == 1.0 {
                            tmp.iter_mut().zip(row).for_each(|(d, s)| *d += s);
                        } else {
                            tmp.iter_mut().zip(row).for_each(|(d, s)| *d += wt * s);
                        }
                    }
                }
            }
            tx.row(&tmp, out, fill);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::super::resize::{axis_taps, image_planes, pass_f32};
    use crate::{eval, Tensor};
    use tessera_ir::op::{ResizeAttrs, ResizeCoord, ResizeMode, ResizeNearest};
    use tessera_ir::Op;

    fn attrs(
        mode: ResizeMode,
        coord: ResizeCoord,
        axes: &[usize],
        ins: &[usize],
        outs: &[usize],
    ) -> ResizeAttrs {
        let n = axes.len();
        ResizeAttrs {
            mode,
            coord,
            nearest: ResizeNearest::RoundPreferFloor,
            cubic_a: -0.75,
            exclude_outside: false,
            antialias: false,
            extrapolation_value: 0.5,
            axes: axes.to_vec(),
            sizes: outs.to_vec(),
            scales: ins
                .iter()
                .zip(outs)
                .map(|(&i, &o)| o as f64 / i as f64)
                .collect(),
            // A crop of the last two axes only (the others kept whole: identity axes).
            roi: (0..2 * n)
                .map(|i| match (i < n, i % n + 2 >= n) {
                    (true, true) => 0.1,
                    (false, true) => 0.8,
                    (true, false) => 0.0,
                    (false, false) => 1.0,
                })
                .collect(),
        }
    }

    /// The one-sweep planes equal the generic passes (height, then width) bit for bit, for
    /// every mode, up- and downsampling, with extrapolated coordinates, through `Resize`.
    #[test]
    fn planes_equal_the_generic_passes_bitwise() {
        let modes = [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic];
        let coords = [
            ResizeCoord::HalfPixel,
            ResizeCoord::AlignCorners,
            ResizeCoord::TfCropAndResize,
        ];
        let mut checked = 0;
        for (xs, oh, ow) in [
            (vec![2, 3, 4, 4], 8, 8),
            (vec![1, 2, 8, 5], 3, 11),
            (vec![3, 7, 9], 9, 2),
        ] {
            let r = xs.len();
            let n: usize = xs.iter().product();
            let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61).sin() - 0.25).collect();
            let x = Tensor::f32(xs.to_vec(), v.clone());
            for &mode in &modes {
                for &coord in &coords {
                    let axes: Vec<usize> = (0..r).collect();
                    let mut outs = xs.to_vec();
                    outs[r - 2] = oh;
                    outs[r - 1] = ow;
                    let a = attrs(mode, coord, &axes, &xs, &outs);
                    let got = eval(&Op::Resize(a.clone()), &[&x]).expect("Resize")[0].clone();
                    // The one-sweep path served it.
                    let all: Vec<_> = (0..r).map(|k| axis_taps(&a, k, xs[k])).collect();
                    let planes = image_planes(&a, &x, &all).expect("Resize").expect("planes");
                    assert_eq!(planes, got);
                    let th = axis_taps(&a, r - 2, xs[r - 2]);
                    let tw = axis_taps(&a, r - 1, xs[r - 1]);
                    let fill = a.extrapolation_value;
                    let mid = pass_f32(&xs, r - 2, &v, &th, fill);
                    let mut ms = xs.to_vec();
                    ms[r - 2] = oh;
                    let want = pass_f32(&ms, r - 1, &mid, &tw, fill);
                    assert_eq!(got.shape, outs);
                    let g: Vec<u32> = got
                        .as_f32()
                        .expect("f32")
                        .iter()
                        .map(|f| f.to_bits())
                        .collect();
                    let w: Vec<u32> = want.iter().map(|f| f.to_bits()).collect();
                    assert_eq!(g, w, "{mode:?} {coord:?} {xs:?} → {oh}×{ow}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 27);
    }
}
