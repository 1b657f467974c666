//! ArgMax / ArgMin along one axis (<https://onnx.ai/onnx/operators/onnx__ArgMax.html>):
//! the index (i64) of the largest or smallest element, the first one on ties unless
//! `select_last_index`. NaN counts as the extreme value, as numpy's `argmax` / `argmin` (the
//! ONNX reference) treat it: the first (last) NaN wins.
//!
//! The input is walked as `outer × n × inner`: for each outer block, the running best values
//! and indices of the `inner` lanes are updated row by row, so every pass reads a contiguous
//! row whatever the axis.
use super::{describe, make, KResult};
use tessera_ir::op::ArgReduceAttrs;
use tessera_ir::{DType, Tensor, TensorData};

/// Evaluates ArgMax / ArgMin.
pub(crate) fn arg_reduce(a: &ArgReduceAttrs, x: &Tensor) -> KResult<Tensor> {
    let rank = x.shape.len();
    if a.axis >= rank {
        return Err(format!("axis {} out of range for {}", a.axis, describe(x)));
    }
    let n = x.shape[a.axis];
    if n == 0 {
        return Err(format!(
            "axis {} of {} is empty: no element to select",
            a.axis,
            describe(x)
        ));
    }
    let outer: usize = x.shape[..a.axis].iter().product();
    let inner: usize = x.shape[a.axis + 1..].iter().product();
    let dims = (outer, n, inner);
    let idx = match &x.data {
        TensorData::F32(v) => select(v, dims, a.max, a.select_last_index),
        TensorData::I64(v) => select(v, dims, a.max, a.select_last_index),
        TensorData::Bool(_) => return Err(format!("expects a numeric input, got {}", describe(x))),
    };
    let mut shape = x.shape.clone();
    if a.keepdims {
        shape[a.axis] = 1;
    } else {
        shape.remove(a.axis);
    }
    make(DType::I64, shape, TensorData::I64(idx))
}

/// Picks the kernel for (max/min, first/last), each with its comparison inlined.
fn select<T: PartialOrd + Copy>(
    v: &[T],
    dims: (usize, usize, usize),
    max: bool,
    last: bool,
) -> Vec<i64> {
    // `x != x` is NaN (always false for integers): a NaN beats anything but a NaN (first
    // wins) or beats anything (last wins).
    #[allow(clippy::eq_op)]
    match (max, last) {
        (true, false) => walk(v, dims, |x, b| x > b || (x != x && b == b)),
        (true, true) => walk(v, dims, |x, b| x >= b || x != x),
        (false, false) => walk(v, dims, |x, b| x < b || (x != x && b == b)),
        (false, true) => walk(v, dims, |x, b| x <= b || x != x),
    }
}

/// The index along the middle axis of `outer × n × inner` data at which `better` last
/// replaced the running best, per (outer, inner) lane.
#[inline(always)]
fn walk<T: Copy>(
    v: &[T],
    (outer, n, inner): (usize, usize, usize),
    better: impl Fn(T, T) -> bool,
) -> Vec<i64> {
    let mut idx = vec![0i64; outer * inner];
    let mut best: Vec<T> = Vec::with_capacity(inner);
    for (o, out) in idx.chunks_exact_mut(inner.max(1)).enumerate().take(outer) {
        let block = &v[o * n * inner..(o + 1) * n * inner];
        best.clear();
        best.extend_from_slice(&block[..inner]);
        for (k, row) in block.chunks_exact(inner.max(1)).enumerate().skip(1) {
            for ((b, i), &x) in best.iter_mut().zip(out.iter_mut()).zip(row) {
                if better(x, *b) {
                    *b = x;
                    *i = k as i64;
                }
            }
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::Op;

    fn run(max: bool, axis: usize, keepdims: bool, last: bool, x: &Tensor) -> Tensor {
        let op = Op::ArgReduce(ArgReduceAttrs {
            max,
            axis,
            keepdims,
            select_last_index: last,
        });
        crate::eval(&op, &[x]).unwrap().remove(0)
    }

    /// The indices of a brute-force scan over every (outer, inner) lane.
    fn brute(v: &[f32], shape: &[usize], axis: usize, max: bool, last: bool) -> Vec<i64> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let n = shape[axis];
        let mut out = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let col: Vec<f32> = (0..n).map(|k| v[(o * n + k) * inner + i]).collect();
                let ext = if max {
                    col.iter().cloned().fold(f32::MIN, f32::max)
                } else {
                    col.iter().cloned().fold(f32::MAX, f32::min)
                };
                let pos = |k: &usize| col[*k] == ext;
                let k = if last {
                    (0..n).rev().find(pos)
                } else {
                    (0..n).find(pos)
                };
                out.push(k.unwrap() as i64);
            }
        }
        out
    }

    /// Every axis of a [3, 4, 5] tensor with many ties, both kinds, both tie rules, with and
    /// without keepdims, against a brute-force scan.
    #[test]
    fn every_axis_against_a_scan() {
        let shape = [3usize, 4, 5];
        let v: Vec<f32> = (0..60).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let x = Tensor::f32(shape.to_vec(), v.clone());
        for axis in 0..3 {
            for (max, last) in [(true, false), (true, true), (false, false), (false, true)] {
                let want = brute(&v, &shape, axis, max, last);
                let y = run(max, axis, false, last, &x);
                let mut s = shape.to_vec();
                s.remove(axis);
                assert_eq!((y.dtype, &y.shape), (DType::I64, &s));
                assert_eq!(
                    y.as_i64().unwrap(),
                    want,
                    "axis {axis} max {max} last {last}"
                );
                let k = run(max, axis, true, last, &x);
                s.insert(axis, 1);
                assert_eq!(k.shape, s);
                assert_eq!(k.as_i64().unwrap(), want);
            }
        }
    }

    /// The ONNX ArgMax example (`[[2, 1], [3, 10]]`), on integers, and ties.
    #[test]
    fn onnx_examples_and_integers() {
        let x = Tensor::f32(vec![2, 2], vec![2.0, 1.0, 3.0, 10.0]);
        assert_eq!(run(true, 1, true, false, &x).as_i64().unwrap(), &[0, 1]);
        assert_eq!(run(true, 0, true, false, &x).as_i64().unwrap(), &[1, 1]);
        assert_eq!(run(false, 1, false, false, &x).as_i64().unwrap(), &[1, 0]);
        let t = Tensor::f32(vec![2, 2], vec![2.0, 2.0, 3.0, 10.0]);
        assert_eq!(run(true, 1, true, true, &t).as_i64().unwrap(), &[1, 1]);
        assert_eq!(run(true, 1, true, false, &t).as_i64().unwrap(), &[0, 1]);
        let i = Tensor::i64(vec![5], vec![4, -9, 4, 7, -9]);
        assert_eq!(run(true, 0, false, false, &i).as_i64().unwrap(), &[3]);
        assert_eq!(run(false, 0, false, false, &i).as_i64().unwrap(), &[1]);
        assert_eq!(run(false, 0, false, true, &i).as_i64().unwrap(), &[4]);
        assert_eq!(run(false, 0, false, true, &i).shape, Vec::<usize>::new());
    }

    /// NaN wins as in numpy (first NaN; the last one with select_last_index).
    #[test]
    fn nan_is_the_extreme() {
        let x = Tensor::f32(vec![5], vec![1.0, f32::NAN, 9.0, f32::NAN, -3.0]);
        for max in [true, false] {
            assert_eq!(run(max, 0, false, false, &x).as_i64().unwrap(), &[1]);
            assert_eq!(run(max, 0, false, true, &x).as_i64().unwrap(), &[3]);
        }
    }

    /// An empty reduced axis, a bool input and an axis out of range are errors.
    #[test]
    fn bad_inputs_are_errors() {
        let op = |axis| {
            Op::ArgReduce(ArgReduceAttrs {
                max: true,
                axis,
                keepdims: true,
                select_last_index: false,
            })
        };
        let empty = Tensor::f32(vec![2, 0], vec![]);
        assert!(crate::eval(&op(1), &[&empty]).is_err());
        let b = Tensor::bool(vec![2], vec![true, false]);
        assert!(crate::eval(&op(0), &[&b]).is_err());
        let x = Tensor::f32(vec![2], vec![1.0, 2.0]);
        let e = crate::eval(&op(3), &[&x]).unwrap_err().to_string();
        assert!(e.starts_with("ArgMax:"), "{e}");
        // Empty outer or inner extents are fine.
        let z = Tensor::f32(vec![0, 3], vec![]);
        assert_eq!(crate::eval(&op(1), &[&z]).unwrap()[0].shape, vec![0, 1]);
        let w = Tensor::f32(vec![3, 0], vec![]);
        assert_eq!(crate::eval(&op(0), &[&w]).unwrap()[0].shape, vec![1, 0]);
    }
}
