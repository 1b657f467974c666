//! Kernel taps that read only padding, trimmed from a Conv: on a map smaller than its
//! kernel's reach (Inception's 3×3 and 1×3 Convs on 1×1 maps, its 1×7 on 3×3 maps,
//! DeepLabV3's ASPP with dilation 12–36 on 4×4 maps) the first and last taps along an axis
//! may read padding at every output position. They add `0 · w` to every sum, so a Conv
//! with a kernel cut to its live taps, and each begin (end) pad reduced by the dilation
//! times the taps cut at the begin (end), has the same output extent and reads the same
//! input elements at each output, and its weights are the slice of the live taps: the
//! Conv's multiply-adds and the weights it reads shrink by the dead taps' share (a 3×3
//! Conv on a 1×1 map becomes a 1×1 Conv reading a ninth of its weights).
//!
//! Only the dead taps at either end of an axis are cut (the live taps of an axis need not
//! be contiguous under a stride larger than the map), and never more than the pads allow:
//! the trimmed Conv's pads stay non-negative.
use std::ops::Range;
use tessera_ir::op::ConvAttrs;
use tessera_ir::spec::window_out_extent;

/// A Conv with its dead end taps cut: the new attributes (pads reduced) and, per spatial
/// axis, the range of kernel taps kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TrimmedTaps {
    /// The trimmed Conv's attributes.
    pub attrs: ConvAttrs,
    /// Kept taps per spatial axis (`kernel[i]` taps become `keep[i].len()`).
    pub keep: Vec<Range<usize>>,
}

impl TrimmedTaps {
    /// The trimmed weight shape `[M, C/g, kept taps..]` of a weight of shape `w`.
    pub fn weight_shape(&self, w: &[usize]) -> Vec<usize> {
        let mut s = w[..2].to_vec();
        s.extend(self.keep.iter().map(|r| r.len()));
        s
    }

    /// The kept taps of weights `wv` of shape `w` (row-major `[M, C/g, kernel..]`), in the
    /// same order: the trimmed Conv's weights.
    pub fn slice_weights(&self, w: &[usize], wv: &[f32]) -> Vec<f32> {
        let kernel = &w[2..];
        let taps: usize = kernel.iter().product();
        let kept: usize = self.keep.iter().map(|r| r.len()).product();
        let mut out = Vec::with_capacity(w[0] * w[1] * kept);
        // Offsets of the kept taps inside one [kernel..] block, in row-major order.
        let mut offsets = vec![0usize];
        for (i, r) in self.keep.iter().enumerate() {
            let inner: usize = kernel[i + 1..].iter().product();
            offsets = offsets
                .iter()
                .flat_map(|&o| r.clone().map(move |t| o + t * inner))
                .collect();
        }
        for block in wv.chunks_exact(taps.max(1)) {
            out.extend(offsets.iter().map(|&o| block[o]));
        }
        out
    }
}

/// True when kernel tap `t` of an axis of input extent `h` and output extent `out`, with
/// stride `st`, dilation `d` and begin pad `pb`, reads the input at some output: tap `t`
/// reads element `o·st + t·d − pb` for outputs `o < out`.
pub(crate) fn tap_reads_input(
    t: usize,
    (h, out): (usize, usize),
    (st, d, pb): (usize, usize, usize),
) -> bool {
    (0..out).any(|o| {
        let r = o * st + t * d;
        r >= pb && r - pb < h
    })
}

/// The trim of a Conv of input `x` `[N, C, spatial..]`, weights `w` `[M, C/g, kernel..]` and
/// attributes `a`, or `None` when no end tap reads only padding (or the shapes do not fit
/// the attributes: the Conv's own checks report that). Depthwise Convs are left alone
/// (their weights are small and their kernels are built for whole 3×3 and 5×5 windows).
pub fn trim_dead_taps(x: &[usize], w: &[usize], a: &ConvAttrs) -> Option<TrimmedTaps> {
    let s = x.len().checked_sub(2)?;
    let fits = s >= 1
        && w.len() == x.len()
        && a.strides.len() == s
        && a.dilations.len() == s
        && a.pads.len() == 2 * s
        && !a.depthwise
        && w[1] > 1;
    if !fits {
        return None;
    }
    let mut attrs = a.clone();
    let mut keep = Vec::with_capacity(s);
    let mut cut = false;
    for i in 0..s {
        let (h, k, st, d) = (x[2 + i], w[2 + i], a.strides[i], a.dilations[i]);
        let (pb, pe) = (a.pads[i], a.pads[s + i]);
        let out = window_out_extent(h, k, st, d, (pb, pe), false)?;
        let live = |t: usize| tap_reads_input(t, (h, out), (st, d, pb));
        let first = (0..k).find(|&t| live(t))?;
        let last = (0..k).rev().find(|&t| live(t))?;
        // Cut no more taps than the pads hold (pads stay non-negative).
        let begin = first.min(pb / d);
        let end = (k - 1 - last).min(pe / d);
        let (nb, ne) = (pb - begin * d, pe - end * d);
        let kept = k - begin - end;
        if window_out_extent(h, kept, st, d, (nb, ne), false) != Some(out) {
            return None;
        }
        cut |= kept < k;
        attrs.pads[i] = nb;
        attrs.pads[s + i] = ne;
        keep.push(begin..k - end);
    }
    cut.then_some(TrimmedTaps { attrs, keep })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::conv;
    use tessera_ir::Tensor;

    fn attrs(s: usize, strides: &[usize], dil: &[usize], pads: &[usize]) -> ConvAttrs {
        ConvAttrs {
            strides: strides[..s].to_vec(),
            dilations: dil[..s].to_vec(),
            pads: pads.to_vec(),
            group: 1,
            depthwise: false,
        }
    }

    fn seq(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    /// Conv output of the whole weights and of the trimmed ones.
    fn both(x: &[usize], w: &[usize], a: &ConvAttrs) -> Option<(Tensor, Tensor, TrimmedTaps)> {
        let t = trim_dead_taps(x, w, a)?;
        let xv = Tensor::f32(x.to_vec(), seq(x.iter().product(), 0.1));
        let wv = seq(w.iter().product(), 0.7);
        let whole = Tensor::f32(w.to_vec(), wv.clone());
        let cut = Tensor::f32(t.weight_shape(w), t.slice_weights(w, &wv));
        let y = conv(a, &xv, &whole, None).expect("whole Conv");
        let yt = conv(&t.attrs, &xv, &cut, None).expect("trimmed Conv");
        Some((y, yt, t))
    }

    fn close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.shape, b.shape);
        let (a, b) = (a.as_f32().expect("f32"), b.as_f32().expect("f32"));
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                "element {i}: {p} vs {q}"
            );
        }
    }

    #[test]
    fn a_3x3_conv_on_a_1x1_map_becomes_a_1x1_conv() {
        let a = attrs(2, &[1, 1], &[1, 1], &[1, 1, 1, 1]);
        let (y, yt, t) = both(&[2, 8, 1, 1], &[16, 8, 3, 3], &a).expect("trimmed");
        assert_eq!(t.keep, vec![1..2, 1..2]);
        assert_eq!(t.attrs.pads, vec![0, 0, 0, 0]);
        close(&y, &yt);
    }

    #[test]
    fn a_1x7_conv_on_a_3x3_map_keeps_five_taps() {
        let a = attrs(2, &[1, 1], &[1, 1], &[0, 3, 0, 3]);
        let (y, yt, t) = both(&[2, 4, 3, 3], &[8, 4, 1, 7], &a).expect("trimmed");
        assert_eq!(t.keep, vec![0..1, 1..6]);
        assert_eq!(t.attrs.pads, vec![0, 2, 0, 2]);
        close(&y, &yt);
    }

    #[test]
    fn dilated_taps_on_a_small_map_leave_the_centre() {
        // DeepLabV3's ASPP: dilation 12 on a 4×4 map.
        let a = attrs(2, &[1, 1], &[12, 12], &[12, 12, 12, 12]);
        let (y, yt, t) = both(&[1, 4, 4, 4], &[8, 4, 3, 3], &a).expect("trimmed");
        assert_eq!(t.keep, vec![1..2, 1..2]);
        close(&y, &yt);
    }

    #[test]
    fn strides_one_and_three_axes_and_uneven_pads_match_the_whole_conv() {
        let mut checked = 0;
        for (x, w, st, d, pads) in [
            (vec![1, 3, 2], vec![4, 3, 5], vec![2], vec![1], vec![3, 2]),
            (
                vec![2, 3, 1, 2],
                vec![4, 3, 3, 3],
                vec![2, 1],
                vec![1, 2],
                vec![1, 2, 1, 2],
            ),
            (
                vec![1, 2, 2, 3],
                vec![4, 2, 5, 3],
                vec![3, 2],
                vec![1, 1],
                vec![2, 1, 3, 0],
            ),
            (
                vec![1, 2, 1, 2, 2],
                vec![3, 2, 3, 3, 1],
                vec![1, 1, 1],
                vec![1; 3],
                vec![1; 6],
            ),
        ] {
            let s = x.len() - 2;
            let a = attrs(s, &st, &d, &pads);
            if let Some((y, yt, t)) = both(&x, &w, &a) {
                assert!(t.attrs.pads.len() == 2 * s);
                close(&y, &yt);
                checked += 1;
            }
        }
        assert_eq!(checked, 4);
    }

    #[test]
    fn live_taps_everywhere_or_depthwise_are_not_trimmed() {
        let a = attrs(2, &[1, 1], &[1, 1], &[1, 1, 1, 1]);
        assert!(trim_dead_taps(&[2, 8, 4, 4], &[16, 8, 3, 3], &a).is_none());
        let dw = ConvAttrs {
            group: 8,
            depthwise: true,
            ..a.clone()
        };
        assert!(trim_dead_taps(&[2, 8, 1, 1], &[8, 1, 3, 3], &dw).is_none());
        // Without pads every tap reads the input.
        let none = attrs(2, &[1, 1], &[1, 1], &[0, 0, 0, 0]);
        assert!(trim_dead_taps(&[1, 2, 3, 3], &[4, 2, 3, 3], &none).is_none());
    }
}
