//! CumSum along one axis (inclusive/exclusive, forward/reverse).
use super::{describe, make, wrap_int, KResult};
use tessera_ir::op::CumSumAttrs;
use tessera_ir::{Tensor, TensorData};

fn scan<T: Copy + std::ops::Add<Output = T> + Default>(
    v: &[T],
    shape: &[usize],
    a: &CumSumAttrs,
    add: impl Fn(T, T) -> T,
) -> Vec<T> {
    let outer: usize = shape[..a.axis].iter().product();
    let n = shape[a.axis];
    let inner: usize = shape[a.axis + 1..].iter().product();
    let mut out = vec![T::default(); v.len()];
    // Row by row along the axis, the `inner` running sums side by side (contiguous,
    // vectorisable; the same additions in the same order per element as one scan each).
    let mut acc = vec![T::default(); inner];
    for o in 0..outer {
        acc.fill(T::default());
        for step in 0..n {
            let j = if a.reverse { n - 1 - step } else { step };
            let at = (o * n + j) * inner;
            let (src, dst) = (&v[at..at + inner], &mut out[at..at + inner]);
            if a.exclusive {
                for ((d, s), &x) in dst.iter_mut().zip(acc.iter_mut()).zip(src) {
                    *d = *s;
                    *s = add(*s, x);
                }
            } else {
                for ((d, s), &x) in dst.iter_mut().zip(acc.iter_mut()).zip(src) {
                    *s = add(*s, x);
                    *d = *s;
                }
            }
        }
    }
    out
}

/// Cumulative sum of `x` along `a.axis`.
pub(crate) fn cumsum(a: &CumSumAttrs, x: &Tensor) -> KResult<Tensor> {
    if a.axis >= x.shape.len() {
        return Err(format!("axis {} out of range for {}", a.axis, describe(x)));
    }
    let data = match &x.data {
        TensorData::F32(v) => TensorData::F32(scan(v, &x.shape, a, |p, q| p + q)),
        TensorData::I64(v) => {
            let dt = x.dtype;
            TensorData::I64(scan(v, &x.shape, a, |p, q| wrap_int(dt, p.wrapping_add(q))))
        }
        TensorData::Bool(_) => return Err(format!("expects a numeric input, got {}", describe(x))),
    };
    make(x.dtype, x.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(axis: usize, exclusive: bool, reverse: bool, x: &Tensor) -> Vec<f32> {
        cumsum(
            &CumSumAttrs {
                axis,
                exclusive,
                reverse,
            },
            x,
        )
        .unwrap()
        .as_f32()
        .unwrap()
        .to_vec()
    }

    #[test]
    fn four_modes_match_onnx_examples() {
        let x = Tensor::f32(vec![5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(run(0, false, false, &x), vec![1.0, 3.0, 6.0, 10.0, 15.0]);
        assert_eq!(run(0, true, false, &x), vec![0.0, 1.0, 3.0, 6.0, 10.0]);
        assert_eq!(run(0, false, true, &x), vec![15.0, 14.0, 12.0, 9.0, 5.0]);
        assert_eq!(run(0, true, true, &x), vec![14.0, 12.0, 9.0, 5.0, 0.0]);
    }

    #[test]
    fn along_axis0_of_matrix() {
        let x = Tensor::i64(vec![2, 3], vec![1, 2, 3, 4, 5, 6]);
        let y = cumsum(
            &CumSumAttrs {
                axis: 0,
                exclusive: false,
                reverse: false,
            },
            &x,
        )
        .unwrap();
        assert_eq!(y.as_i64().unwrap(), &[1, 2, 3, 5, 7, 9]);
    }
}
