//! Reductions over a set of axes (Sum, Mean, Max, Min, Prod, SumSquare, L2), with keepdims.
//!
//! Floats accumulate in f64 and round once; an empty reduction gives the identity of the
//! op (0, 1, -inf, +inf; NaN for a mean).
use super::index::{strided_offsets, strides};
use super::simd::{self, vectorized};
use super::{describe, make, wrap_int, KResult};
use tessera_ir::op::{ReduceAttrs, ReduceKind};
use tessera_ir::{Tensor, TensorData};

/// Output shapes of a reduction: (keepdims shape, final shape).
fn reduced_shapes(shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let fin = if keepdims {
        kept.clone()
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    (kept, fin)
}

/// For each input element, the offset of the output element it reduces into.
fn output_offsets(shape: &[usize], kept: &[usize], axes: &[usize]) -> Vec<usize> {
    let ks = strides(kept);
    let s: Vec<isize> = (0..shape.len())
        .map(|d| if axes.contains(&d) { 0 } else { ks[d] as isize })
        .collect();
    strided_offsets(shape, &s, 0)
}

/// `(outer, count, inner)` when the reduced axes are one contiguous run `lo..=hi` (the input
/// is then `outer × count × inner` and output element `o·inner + i` reduces
/// `x[(o·count + r)·inner + i]` over r).
fn contiguous_run(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (&lo, &hi) = (sorted.first()?, sorted.last()?);
    if hi - lo + 1 != sorted.len() {
        return None;
    }
    Some((
        shape[..lo].iter().product(),
        shape[lo..=hi].iter().product(),
        shape[hi + 1..].iter().product(),
    ))
}

/// Lanes of [`sum_f64`]'s partial sums.
const SUM_LANES: usize = 8;

/// Sum of `f(x)` over a row in f64, in `SUM_LANES` partial sums (independent adds that
/// vectorise, instead of one chain that waits on every add), then the tail.
#[inline(always)]
fn sum_f64(row: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; SUM_LANES];
    let chunks = row.chunks_exact(SUM_LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x as f64);
        }
    }
    let mut s: f64 = acc.iter().sum();
    for &x in tail {
        s += f(x as f64);
    }
    s
}

/// The element of `row` that `beats` every other (`x > m`: the largest), NaN when the row
/// holds a NaN (ONNX ReduceMax/Min), −∞/+∞ identities aside; in [`simd::LANES`] partial
/// results that vectorise. Exact in f32, like every order of comparisons.
#[inline(always)]
fn extreme(row: &[f32], beats: impl Fn(f32, f32) -> bool) -> f32 {
    let first = row.first().copied().unwrap_or(0.0);
    let mut acc = [first; simd::LANES];
    let chunks = row.chunks_exact(simd::LANES);
    let tail = chunks.remainder();
    // A NaN once in a lane stays: neither `x > NaN` nor `x < NaN` holds, and a NaN x
    // replaces the lane.
    let step = |m: f32, x: f32| if x.is_nan() || beats(x, m) { x } else { m };
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = step(*a, x);
        }
    }
    let mut m = tail.iter().fold(first, |m, &x| step(m, x));
    for &a in &acc {
        m = step(m, a);
    }
    m
}

/// The f32 accumulation step of `kind` (in f64).
#[inline(always)]
fn accumulate(kind: ReduceKind, a: f64, x: f64) -> f64 {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => a + x,
        ReduceKind::Prod => a * x,
        ReduceKind::SumSquare | ReduceKind::L2 => a + x * x,
        ReduceKind::Max if x.is_nan() || a.is_nan() => f64::NAN,
        ReduceKind::Min if x.is_nan() || a.is_nan() => f64::NAN,
        ReduceKind::Max => a.max(x),
        ReduceKind::Min => a.min(x),
    }
}

/// The value a reduction starts from, picked from `[lowest, highest, one, zero]`: the
/// lowest value for Max, the highest for Min, one for Prod, zero for the sums.
fn identity<T: Copy>(kind: ReduceKind, [lowest, highest, one, zero]: [T; 4]) -> T {
    match kind {
        ReduceKind::Max => lowest,
        ReduceKind::Min => highest,
        ReduceKind::Prod => one,
        _ => zero,
    }
}

fn reduce_f32(
    kind: ReduceKind,
    v: &[f32],
    (shape, kept, axes): (&[usize], &[usize], &[usize]),
    n_out: usize,
    count: usize,
) -> Vec<f32> {
    let run = contiguous_run(shape, axes);
    let init = identity(kind, [f64::NEG_INFINITY, f64::INFINITY, 1.0, 0.0]);
    let mut acc = vec![init; n_out];
    match run {
        // Reductions over trailing axes (a global average pool, a row max): one row per
        // output, each in partial accumulators that vectorise.
        Some((_, cnt, 1)) if cnt > 0 => {
            // One wide loop per kind (the row function inlines into each).
            vectorized(
                #[inline(always)]
                || match kind {
                    ReduceKind::Sum | ReduceKind::Mean => {
                        for (a, row) in acc.iter_mut().zip(v.chunks_exact(cnt)) {
                            *a = sum_f64(row, |x| x);
                        }
                    }
                    ReduceKind::SumSquare | ReduceKind::L2 => {
                        for (a, row) in acc.iter_mut().zip(v.chunks_exact(cnt)) {
                            *a = sum_f64(row, |x| x * x);
                        }
                    }
                    ReduceKind::Max => {
                        for (a, row) in acc.iter_mut().zip(v.chunks_exact(cnt)) {
                            *a = extreme(row, |x, m| x > m) as f64;
                        }
                    }
                    ReduceKind::Min => {
                        for (a, row) in acc.iter_mut().zip(v.chunks_exact(cnt)) {
                            *a = extreme(row, |x, m| x < m) as f64;
                        }
                    }
                    ReduceKind::Prod => {
                        for (a, row) in acc.iter_mut().zip(v.chunks_exact(cnt)) {
                            *a = row.iter().fold(1.0, |a, &x| a * x as f64);
                        }
                    }
                },
            );
        }
        // Same elements in the same order per output as the offset table, without it: for
        // each output row, the input rows added in turn (one wide loop per kind).
        Some((_, cnt, inner)) if inner > 0 && cnt > 0 => {
            macro_rules! wide_blocks {
                ($step:expr) => {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (a_row, x_block) in
                                acc.chunks_exact_mut(inner).zip(v.chunks_exact(cnt * inner))
                            {
                                for x_row in x_block.chunks_exact(inner) {
                                    for (a, &x) in a_row.iter_mut().zip(x_row) {
                                        *a = $step(*a, x);
                                    }
                                }
                            }
                        },
                    )
                };
            }
            match kind {
                ReduceKind::Sum | ReduceKind::Mean => wide_blocks!(|a: f64, x: f32| a + x as f64),
                ReduceKind::SumSquare | ReduceKind::L2 => {
                    wide_blocks!(|a: f64, x: f32| a + (x as f64) * (x as f64))
                }
                // NaN once in an accumulator stays (no comparison with NaN holds).
                ReduceKind::Max => wide_blocks!(|a: f64, x: f32| {
                    let x = x as f64;
                    if x.is_nan() || x > a {
                        x
                    } else {
                        a
                    }
                }),
                ReduceKind::Min => wide_blocks!(|a: f64, x: f32| {
                    let x = x as f64;
                    if x.is_nan() || x < a {
                        x
                    } else {
                        a
                    }
                }),
                ReduceKind::Prod => wide_blocks!(|a: f64, x: f32| a * x as f64),
            }
        }
        Some(_) => {}
        None => {
            for (&x, &o) in v.iter().zip(&output_offsets(shape, kept, axes)) {
                acc[o] = accumulate(kind, acc[o], x as f64);
            }
        }
    }
    acc.into_iter()
        .map(|a| match kind {
            ReduceKind::Mean => (a / count as f64) as f32,
            ReduceKind::L2 => a.sqrt() as f32,
            _ => a as f32,
        })
        .collect()
}

fn reduce_i64(kind: ReduceKind, v: &[i64], dst: &[usize], n_out: usize, count: usize) -> Vec<i64> {
    let init = identity(kind, [i64::MIN, i64::MAX, 1, 0]);
    let mut acc = vec![init; n_out];
    for (&x, &o) in v.iter().zip(dst) {
        let a = &mut acc[o];
        *a = match kind {
            ReduceKind::Sum | ReduceKind::Mean => a.wrapping_add(x),
            ReduceKind::Prod => a.wrapping_mul(x),
            ReduceKind::SumSquare | ReduceKind::L2 => a.wrapping_add(x.wrapping_mul(x)),
            ReduceKind::Max => (*a).max(x),
            ReduceKind::Min => (*a).min(x),
        };
    }
    acc.into_iter()
        .map(|a| match kind {
            ReduceKind::Mean if count > 0 => a / count as i64,
            ReduceKind::L2 => (a as f64).sqrt() as i64,
            _ => a,
        })
        .collect()
}

/// Evaluates a reduction.
pub(crate) fn reduce(a: &ReduceAttrs, x: &Tensor) -> KResult<Tensor> {
    if let Some(&bad) = a.axes.iter().find(|&&d| d >= x.shape.len()) {
        return Err(format!("axis {bad} out of range for {}", describe(x)));
    }
    let (kept, out_shape) = reduced_shapes(&x.shape, &a.axes, a.keepdims);
    let n_out: usize = kept.iter().product();
    let count: usize = a.axes.iter().map(|&d| x.shape[d]).product();
    let data = match &x.data {
        TensorData::F32(v) => {
            let geometry = (&x.shape[..], &kept[..], &a.axes[..]);
            TensorData::F32(reduce_f32(a.kind, v, geometry, n_out, count))
        }
        TensorData::I64(v) => {
            let dst = output_offsets(&x.shape, &kept, &a.axes);
            let r = reduce_i64(a.kind, v, &dst, n_out, count);
            TensorData::I64(r.into_iter().map(|e| wrap_int(x.dtype, e)).collect())
        }
        TensorData::Bool(v) if matches!(a.kind, ReduceKind::Max | ReduceKind::Min) => {
            let dst = output_offsets(&x.shape, &kept, &a.axes);
            let any = a.kind == ReduceKind::Max;
            let mut acc = vec![!any; n_out];
            for (&b, &o) in v.iter().zip(&dst) {
                acc[o] = if any { acc[o] || b } else { acc[o] && b };
            }
            TensorData::Bool(acc)
        }
        TensorData::Bool(_) => return Err(format!("{:?} is not defined on booleans", a.kind)),
    };
    make(x.dtype, out_shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kind: ReduceKind, axes: Vec<usize>, keepdims: bool) -> ReduceAttrs {
        ReduceAttrs {
            kind,
            axes,
            keepdims,
        }
    }

    #[test]
    fn sum_and_mean_over_axes() {
        let x = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let s = reduce(&attrs(ReduceKind::Sum, vec![1], false), &x).unwrap();
        assert_eq!(
            (s.shape.clone(), s.as_f32().unwrap().to_vec()),
            (vec![2], vec![6.0, 15.0])
        );
        let m = reduce(&attrs(ReduceKind::Mean, vec![0], true), &x).unwrap();
        assert_eq!(
            (m.shape.clone(), m.as_f32().unwrap().to_vec()),
            (vec![1, 3], vec![2.5, 3.5, 4.5])
        );
        let all = reduce(&attrs(ReduceKind::Sum, vec![0, 1], false), &x).unwrap();
        assert_eq!(
            (all.shape.clone(), all.as_f32().unwrap().to_vec()),
            (vec![], vec![21.0])
        );
    }

    /// Every kind over trailing axes (row loops) and over a middle axis (block loops)
    /// against a direct per-output fold in f64, NaN rows included.
    #[test]
    fn row_and_block_paths_match_a_direct_fold() {
        let (a, b, c) = (3usize, 37usize, 5usize);
        let mut v: Vec<f32> = (0..a * b * c)
            .map(|i| (i as f32 * 0.61).sin() * 3.0)
            .collect();
        v[7] = f32::NAN; // row 0 of the trailing reduction; column 2 of block 0
        let x = Tensor::f32(vec![a, b, c], v.clone());
        let kinds = [
            ReduceKind::Sum,
            ReduceKind::Mean,
            ReduceKind::Max,
            ReduceKind::Min,
            ReduceKind::Prod,
            ReduceKind::SumSquare,
            ReduceKind::L2,
        ];
        let fold = |kind: ReduceKind, xs: &mut dyn Iterator<Item = f32>| -> f32 {
            let init = identity(kind, [f64::NEG_INFINITY, f64::INFINITY, 1.0, 0.0]);
            let (mut acc, mut n) = (init, 0usize);
            for x in xs {
                acc = accumulate(kind, acc, x as f64);
                n += 1;
            }
            match kind {
                ReduceKind::Mean => (acc / n as f64) as f32,
                ReduceKind::L2 => acc.sqrt() as f32,
                _ => acc as f32,
            }
        };
        let same = |got: f32, want: f32| got == want || (got.is_nan() && want.is_nan());
        for kind in kinds {
            // Trailing axes 1..=2: one row of b·c per output.
            let r = reduce(&attrs(kind, vec![1, 2], false), &x).unwrap();
            for (o, &got) in r.as_f32().unwrap().iter().enumerate() {
                let want = fold(kind, &mut v[o * b * c..(o + 1) * b * c].iter().copied());
                let close = (got - want).abs() <= 1e-6 * want.abs().max(1.0);
                assert!(
                    same(got, want) || close,
                    "{kind:?} row {o}: {got} vs {want}"
                );
            }
            // Middle axis 1: blocks of c.
            let r = reduce(&attrs(kind, vec![1], false), &x).unwrap();
            for (o, &got) in r.as_f32().unwrap().iter().enumerate() {
                let (i, k) = (o / c, o % c);
                let want = fold(kind, &mut (0..b).map(|j| v[(i * b + j) * c + k]));
                assert!(same(got, want), "{kind:?} block {o}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn contiguous_axes_match_the_offset_table() {
        // [2, 3, 4, 2]: reduce the middle run 1..=2, and a non-contiguous pair {0, 2}.
        let v: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::f32(vec![2, 3, 4, 2], v.clone());
        let r = reduce(&attrs(ReduceKind::Sum, vec![2, 1], false), &x).unwrap();
        assert_eq!(r.shape, vec![2, 2]);
        for (o, got) in r.as_f32().unwrap().iter().enumerate() {
            let (b, i) = (o / 2, o % 2);
            let want: f64 = (0..12).map(|k| v[b * 24 + k * 2 + i] as f64).sum();
            assert_eq!(*got, want as f32);
        }
        let r = reduce(&attrs(ReduceKind::Max, vec![0, 2], true), &x).unwrap();
        assert_eq!(r.shape, vec![1, 3, 1, 2]);
        let want = (0..2)
            .flat_map(|b| (0..4).map(move |k| (b, k)))
            .map(|(b, k)| v[b * 24 + k * 2])
            .fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(r.as_f32().unwrap()[0], want);
    }

    /// A global average pool (Mean over the trailing H, W axes) of rows longer and shorter
    /// than the partial sums, against an f64 sum in order: equal after the one rounding.
    #[test]
    fn trailing_axes_mean_matches_f64_sums() {
        for (c, hw) in [(3usize, 4usize), (5, 3), (2, 9), (4, 256), (3, 17)] {
            let v: Vec<f32> = (0..2 * c * hw)
                .map(|i| (i as f32 * 0.37).sin() * 100.0)
                .collect();
            let x = Tensor::f32(vec![2, c, hw, 1], v.clone());
            let m = reduce(&attrs(ReduceKind::Mean, vec![2, 3], true), &x).unwrap();
            assert_eq!(m.shape, vec![2, c, 1, 1]);
            let s = reduce(&attrs(ReduceKind::Sum, vec![3, 2], false), &x).unwrap();
            for (o, row) in v.chunks_exact(hw).enumerate() {
                let want: f64 = row.iter().map(|&x| x as f64).sum();
                assert_eq!(
                    m.as_f32().unwrap()[o],
                    (want / hw as f64) as f32,
                    "{c}x{hw}"
                );
                assert_eq!(s.as_f32().unwrap()[o], want as f32, "{c}x{hw}");
            }
        }
    }

    #[test]
    fn max_min_prod_l2() {
        let x = Tensor::f32(vec![2, 2], vec![3.0, -4.0, 0.5, 2.0]);
        let r = |k| {
            reduce(&attrs(k, vec![1], false), &x)
                .unwrap()
                .as_f32()
                .unwrap()
                .to_vec()
        };
        assert_eq!(r(ReduceKind::Max), vec![3.0, 2.0]);
        assert_eq!(r(ReduceKind::Min), vec![-4.0, 0.5]);
        assert_eq!(r(ReduceKind::Prod), vec![-12.0, 1.0]);
        assert_eq!(r(ReduceKind::L2), vec![5.0, (4.25f64).sqrt() as f32]);
        assert_eq!(r(ReduceKind::SumSquare), vec![25.0, 4.25]);
    }

    #[test]
    fn empty_axes_is_identity_and_empty_set_gives_identity_element() {
        let x = Tensor::i64(vec![2], vec![7, -1]);
        let r = reduce(&attrs(ReduceKind::Sum, vec![], false), &x).unwrap();
        assert_eq!(r.as_i64().unwrap(), &[7, -1]);
        let e = Tensor::f32(vec![2, 0], vec![]);
        let m = reduce(&attrs(ReduceKind::Max, vec![1], true), &e).unwrap();
        assert_eq!(m.shape, vec![2, 1]);
        assert_eq!(m.as_f32().unwrap(), &[f32::NEG_INFINITY; 2]);
        let p = reduce(&attrs(ReduceKind::Prod, vec![1], false), &e).unwrap();
        assert_eq!(p.as_f32().unwrap(), &[1.0; 2]);
    }

    #[test]
    fn integer_mean_truncates() {
        let x = Tensor::i64(vec![3], vec![1, 2, 2]);
        let m = reduce(&attrs(ReduceKind::Mean, vec![0], false), &x).unwrap();
        assert_eq!(m.as_i64().unwrap(), &[1]);
        assert!(reduce(&attrs(ReduceKind::Sum, vec![1], false), &x).is_err());
    }
}
