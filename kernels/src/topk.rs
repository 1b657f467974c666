//! TopK along one axis (<https://onnx.ai/onnx/operators/onnx__TopK.html>): the `k` largest
//! (or smallest) elements of every lane, in order, and their indices (i64).
//!
//! Order is the ONNX reference's (a stable sort, `np.lexsort` on value then index): values
//! descending for `largest` (ascending otherwise), equal values by ascending index; NaN
//! sorts above every number, so it comes first among the largest and last among the
//! smallest. The output is sorted whatever the node's `sorted` attribute says (without it
//! the order is unspecified, so sorted is a valid answer).
//!
//! Each lane (the `n` elements along the axis at one outer × inner position) is selected
//! with `select_nth_unstable_by` (linear time) and only the `k` winners are sorted, so the
//! cost is `O(n + k log k)` per lane; the comparison includes the index, which makes the
//! unstable selection deterministic.
use super::{describe, make, KResult};
use std::cmp::Ordering;
use tessera_ir::op::TopKAttrs;
use tessera_ir::{DType, Tensor, TensorData};

/// Evaluates TopK: outputs Values (the input's dtype) and Indices (i64).
pub(crate) fn topk(a: &TopKAttrs, x: &Tensor) -> KResult<Vec<Tensor>> {
    let rank = x.shape.len();
    if a.axis >= rank {
        return Err(format!("axis {} out of range for {}", a.axis, describe(x)));
    }
    let n = x.shape[a.axis];
    if a.k > n {
        return Err(format!(
            "k = {} exceeds extent {n} of axis {} of {}",
            a.k,
            a.axis,
            describe(x)
        ));
    }
    let outer: usize = x.shape[..a.axis].iter().product();
    let inner: usize = x.shape[a.axis + 1..].iter().product();
    let dims = (outer, n, inner);
    let (values, idx) = match &x.data {
        TensorData::F32(v) => {
            let (vals, idx) = select(v, dims, a.k, a.largest);
            (TensorData::F32(vals), idx)
        }
        TensorData::I64(v) => {
            let (vals, idx) = select(v, dims, a.k, a.largest);
            (TensorData::I64(vals), idx)
        }
        TensorData::Bool(_) => return Err(format!("expects a numeric input, got {}", describe(x))),
    };
    let mut shape = x.shape.clone();
    shape[a.axis] = a.k;
    Ok(vec![
        make(x.dtype, shape.clone(), values)?,
        make(DType::I64, shape, TensorData::I64(idx))?,
    ])
}

/// Ascending order of numbers with NaN above everything (NaNs equal among themselves).
#[inline(always)]
#[allow(clippy::eq_op)]
fn ascending<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    // `x != x` is NaN (never true for integers).
    match (a != a, b != b) {
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
    }
}

/// The first `k` of every lane of `outer × n × inner` data, in output order, with their
/// indices along the axis; laid out `outer × k × inner`.
fn select<T: PartialOrd + Copy + Default>(
    v: &[T],
    (outer, n, inner): (usize, usize, usize),
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let mut vals = vec![T::default(); outer * k * inner];
    let mut idx = vec![0i64; outer * k * inner];
    if k == 0 {
        return (vals, idx);
    }
    let mut lane: Vec<(T, usize)> = Vec::with_capacity(n);
    let before = |a: &(T, usize), b: &(T, usize)| {
        let by_value = if largest {
            ascending(&b.0, &a.0)
        } else {
            ascending(&a.0, &b.0)
        };
        by_value.then(a.1.cmp(&b.1))
    };
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            lane.clear();
            lane.extend((0..n).map(|j| (v[base + j * inner], j)));
            if k < n {
                lane.select_nth_unstable_by(k - 1, before);
            }
            let top = &mut lane[..k];
            top.sort_unstable_by(before);
            let out = o * k * inner + i;
            for (j, &(val, at)) in top.iter().enumerate() {
                vals[out + j * inner] = val;
                idx[out + j * inner] = at as i64;
            }
        }
    }
    (vals, idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::Op;

    fn run(axis: usize, k: usize, largest: bool, x: &Tensor) -> (Tensor, Tensor) {
        let op = Op::TopK(TopKAttrs { axis, k, largest });
        let mut out = crate::eval(&op, &[x]).unwrap();
        let i = out.remove(1);
        (out.remove(0), i)
    }

    /// The reference's order: a stable sort of each lane by value (descending for largest),
    /// NaN above every number, ties by index; then the first k.
    fn brute(v: &[f32], shape: &[usize], axis: usize, k: usize, largest: bool) -> Vec<(f32, i64)> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let n = shape[axis];
        let mut out = vec![(0.0, 0); outer * k * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut col: Vec<(f32, i64)> = (0..n)
                    .map(|j| (v[(o * n + j) * inner + i], j as i64))
                    .collect();
                // A stable sort: equal keys keep their index order in both directions.
                let key = |x: f32| if x.is_nan() { (1, 0.0) } else { (0, x) };
                col.sort_by(|a, b| {
                    let c = key(a.0).partial_cmp(&key(b.0)).unwrap();
                    if largest {
                        c.reverse()
                    } else {
                        c
                    }
                });
                for j in 0..k {
                    out[(o * k + j) * inner + i] = col[j];
                }
            }
        }
        out
    }

    /// Every axis and k of a [3, 4, 5] tensor with many ties (and a NaN, a -0), both
    /// directions, against a stable sort.
    #[test]
    fn every_axis_and_k_against_a_sort() {
        let shape = [3usize, 4, 5];
        let mut v: Vec<f32> = (0..60).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        v[13] = f32::NAN;
        v[22] = -0.0;
        let x = Tensor::f32(shape.to_vec(), v.clone());
        for axis in 0..3 {
            for k in 0..=shape[axis] {
                for largest in [true, false] {
                    let (vals, idx) = run(axis, k, largest, &x);
                    let mut s = shape.to_vec();
                    s[axis] = k;
                    assert_eq!((&vals.shape, &idx.shape), (&s, &s));
                    let want = brute(&v, &shape, axis, k, largest);
                    let got: Vec<(f32, i64)> = vals
                        .as_f32()
                        .unwrap()
                        .iter()
                        .copied()
                        .zip(idx.as_i64().unwrap().iter().copied())
                        .collect();
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            g.1 == w.1 && (g.0 == w.0 || (g.0.is_nan() && w.0.is_nan())),
                            "axis {axis} k {k} largest {largest}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    /// The ONNX TopK example, integers, and bad inputs.
    #[test]
    fn onnx_example_integers_and_errors() {
        let x = Tensor::f32(vec![3, 4], (0..12).map(|i| i as f32).collect());
        let (v, i) = run(1, 3, true, &x);
        assert_eq!(v.as_f32().unwrap(), &[3., 2., 1., 7., 6., 5., 11., 10., 9.]);
        assert_eq!(i.as_i64().unwrap(), &[3, 2, 1, 3, 2, 1, 3, 2, 1]);
        let t = Tensor::i64(vec![6], vec![5, -1, 5, 9, -1, 0]);
        let (v, i) = run(0, 4, false, &t);
        assert_eq!(v.as_i64().unwrap(), &[-1, -1, 0, 5]);
        assert_eq!(i.as_i64().unwrap(), &[1, 4, 5, 0]);
        let op = |axis, k| {
            Op::TopK(TopKAttrs {
                axis,
                k,
                largest: true,
            })
        };
        let e = crate::eval(&op(0, 7), &[&t]).unwrap_err().to_string();
        assert!(e.starts_with("TopK:") && e.contains("exceeds"), "{e}");
        assert!(crate::eval(&op(1, 1), &[&t]).is_err());
        let b = Tensor::bool(vec![2], vec![true, false]);
        assert!(crate::eval(&op(0, 1), &[&b]).is_err());
    }
}
