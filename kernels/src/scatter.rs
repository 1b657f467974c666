//! ScatterElements and ScatterND (<https://onnx.ai/onnx/operators/onnx__ScatterElements.html>,
//! <https://onnx.ai/onnx/operators/onnx__ScatterND.html>): a copy of the data with the
//! updates written (or combined by the reduction) at the positions the indices name;
//! negative indices count from the end. Updates apply in row-major order of the indices, as
//! the ONNX reference does, so with no reduction the last of duplicate indices wins.
//! Integer sums and products wrap to the data's dtype; max / min propagate NaN (numpy's
//! `maximum` / `minimum`).
use super::gather::{element_offsets, indices_of, norm_index};
use super::index::strides;
use super::{describe, make, wrap_int, Elem, KResult};
use tessera_ir::op::ScatterReduction;
use tessera_ir::{Tensor, TensorData};

/// ScatterElements along `axis`: `out[i with coordinate axis replaced by indices[i]] ∘=
/// updates[i]` for every position i of the indices.
pub(crate) fn scatter_elements(
    axis: usize,
    reduction: ScatterReduction,
    data: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
) -> KResult<Tensor> {
    let ind = indices_of(indices)?;
    let (ds, is) = (&data.shape, &indices.shape);
    let fits = ds.len() == is.len()
        && axis < ds.len()
        && (0..ds.len()).all(|a| a == axis || is[a] <= ds[a])
        && updates.shape == *is;
    if !fits {
        return Err(format!(
            "indices {} and updates {} do not fit data {} on axis {axis}",
            describe(indices),
            describe(updates),
            describe(data)
        ));
    }
    let offsets = element_offsets(ds, is, ind, axis)?;
    apply(reduction, data, updates, &offsets, 1)
}

/// ScatterND: for every index tuple `t` (the last axis of the indices), the block
/// `out[t, ...]` ∘= the matching block of the updates.
pub(crate) fn scatter_nd(
    reduction: ScatterReduction,
    data: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
) -> KResult<Tensor> {
    let ind = indices_of(indices)?;
    let ds = &data.shape;
    let k = indices.shape.last().copied().unwrap_or(0);
    let batch = &indices.shape[..indices.shape.len().saturating_sub(1)];
    let mut want = batch.to_vec();
    want.extend_from_slice(ds.get(k..).unwrap_or_default());
    if indices.shape.is_empty() || k == 0 || k > ds.len() || updates.shape != want {
        return Err(format!(
            "indices {} and updates {} do not fit data {}",
            describe(indices),
            describe(updates),
            describe(data)
        ));
    }
    let dst = strides(ds);
    let offsets = ind
        .chunks_exact(k)
        .map(|tuple| {
            tuple.iter().enumerate().try_fold(0, |off, (a, &i)| {
                Ok::<_, String>(off + norm_index(i, ds[a])? * dst[a])
            })
        })
        .collect::<KResult<Vec<usize>>>()?;
    let block: usize = ds[k..].iter().product();
    apply(reduction, data, updates, &offsets, block)
}

/// Copies the data and combines block `j` of the updates (of `block` elements) into the
/// copy at `offsets[j]`, in order.
fn apply(
    reduction: ScatterReduction,
    data: &Tensor,
    updates: &Tensor,
    offsets: &[usize],
    block: usize,
) -> KResult<Tensor> {
    if data.dtype != updates.dtype {
        return Err(format!(
            "updates {} must have the data's dtype ({})",
            describe(updates),
            data.dtype
        ));
    }
    let d = data.dtype;
    let out = match (&data.data, &updates.data) {
        (TensorData::F32(v), TensorData::F32(u)) => {
            f32::wrap(combine(v, u, offsets, block, float_op(reduction)))
        }
        (TensorData::I64(v), TensorData::I64(u)) => {
            let f = int_op(reduction);
            i64::wrap(combine(v, u, offsets, block, |a, b| wrap_int(d, f(a, b))))
        }
        (TensorData::Bool(v), TensorData::Bool(u)) if reduction == ScatterReduction::None => {
            bool::wrap(combine(v, u, offsets, block, |_, b| b))
        }
        _ => {
            return Err(format!(
                "reduction {reduction:?} needs numbers, got {}",
                describe(data)
            ))
        }
    };
    make(d, data.shape.clone(), out)
}

fn combine<T: Copy>(
    data: &[T],
    updates: &[T],
    offsets: &[usize],
    block: usize,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut out = data.to_vec();
    for (&off, u) in offsets.iter().zip(updates.chunks_exact(block.max(1))) {
        for (o, &x) in out[off..off + block].iter_mut().zip(u) {
            *o = f(*o, x);
        }
    }
    out
}

fn float_op(r: ScatterReduction) -> fn(f32, f32) -> f32 {
    match r {
        ScatterReduction::None => |_, b| b,
        ScatterReduction::Add => |a, b| a + b,
        ScatterReduction::Mul => |a, b| a * b,
        ScatterReduction::Max => |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        },
        ScatterReduction::Min => |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.min(b)
            }
        },
    }
}

fn int_op(r: ScatterReduction) -> fn(i64, i64) -> i64 {
    match r {
        ScatterReduction::None => |_, b| b,
        ScatterReduction::Add => i64::wrapping_add,
        ScatterReduction::Mul => i64::wrapping_mul,
        ScatterReduction::Max => i64::max,
        ScatterReduction::Min => i64::min,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::op::{ScatterElementsAttrs, ScatterNdAttrs};
    use tessera_ir::{DType, Op};

    fn elements(axis: usize, r: ScatterReduction, d: &Tensor, i: &Tensor, u: &Tensor) -> Tensor {
        let op = Op::ScatterElements(ScatterElementsAttrs { axis, reduction: r });
        crate::eval(&op, &[d, i, u]).unwrap().remove(0)
    }

    fn nd(r: ScatterReduction, d: &Tensor, i: &Tensor, u: &Tensor) -> Tensor {
        let op = Op::ScatterNd(ScatterNdAttrs { reduction: r });
        crate::eval(&op, &[d, i, u]).unwrap().remove(0)
    }

    /// The ONNX ScatterElements examples (axis 0 and 1, a negative index) and the reductions
    /// on duplicate indices.
    #[test]
    fn scatter_elements_examples_and_reductions() {
        use ScatterReduction::*;
        let d = Tensor::f32(vec![3, 3], vec![0.0; 9]);
        let i = Tensor::i64(vec![2, 3], vec![1, 0, 2, 0, 2, 1]);
        let u = Tensor::f32(vec![2, 3], vec![1.0, 1.1, 1.2, 2.0, 2.1, 2.2]);
        let y = elements(0, None, &d, &i, &u);
        assert_eq!(
            y.as_f32().unwrap(),
            &[2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2]
        );
        let d = Tensor::f32(vec![1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let i = Tensor::i64(vec![1, 2], vec![1, -2]);
        let u = Tensor::f32(vec![1, 2], vec![1.1, 2.1]);
        let y = elements(1, None, &d, &i, &u);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.1, 3.0, 2.1, 5.0]);
        // Duplicates: [1, 1] into position 1 of [1, 2, 3, 4, 5].
        let i = Tensor::i64(vec![1, 2], vec![1, 1]);
        let u = Tensor::f32(vec![1, 2], vec![1.1, 2.1]);
        let want = |r| elements(1, r, &d, &i, &u).as_f32().unwrap()[1];
        assert_eq!(want(None), 2.1);
        assert!((want(Add) - 5.2).abs() < 1e-6);
        assert!((want(Mul) - 2.0 * 1.1 * 2.1).abs() < 1e-6);
        assert_eq!(want(Max), 2.1);
        assert_eq!(want(Min), 1.1);
        // Integer products wrap to the dtype.
        let d8 = Tensor {
            dtype: DType::I8,
            ..Tensor::i64(vec![2], vec![100, 3])
        };
        let i8i = Tensor::i64(vec![1], vec![0]);
        let u8v = Tensor {
            dtype: DType::I8,
            ..Tensor::i64(vec![1], vec![2])
        };
        let y = elements(0, Mul, &d8, &i8i, &u8v);
        assert_eq!(y.as_i64().unwrap(), &[-56, 3]);
    }

    /// The ONNX ScatterND examples (elements and slices) and a reduction.
    #[test]
    fn scatter_nd_examples() {
        let d = Tensor::i64(vec![8], (1..=8).collect());
        let i = Tensor::i64(vec![4, 1], vec![4, 3, 1, 7]);
        let u = Tensor::i64(vec![4], vec![9, 10, 11, 12]);
        let y = nd(ScatterReduction::None, &d, &i, &u);
        assert_eq!(y.as_i64().unwrap(), &[1, 11, 3, 10, 9, 6, 7, 12]);
        // Slices of a [4, 2, 2] tensor: rows 0 and 2 replaced.
        let d = Tensor::f32(vec![4, 2, 2], (0..16).map(|x| x as f32).collect());
        let i = Tensor::i64(vec![2, 1], vec![0, -2]);
        let u = Tensor::f32(vec![2, 2, 2], vec![5.0; 8]);
        let y = nd(ScatterReduction::Add, &d, &i, &u);
        let want: Vec<f32> = (0..16)
            .map(|x| {
                x as f32
                    + if x < 4 || (8..12).contains(&x) {
                        5.0
                    } else {
                        0.0
                    }
            })
            .collect();
        assert_eq!(y.as_f32().unwrap(), want);
        // Full tuples into a matrix.
        let d = Tensor::f32(vec![2, 2], vec![0.0; 4]);
        let i = Tensor::i64(vec![2, 2], vec![0, 1, 1, 0]);
        let u = Tensor::f32(vec![2], vec![7.0, f32::NAN]);
        let y = nd(ScatterReduction::Max, &d, &i, &u);
        let v = y.as_f32().unwrap();
        assert_eq!((v[1], v[0], v[3]), (7.0, 0.0, 0.0));
        assert!(v[2].is_nan());
    }

    /// Out-of-range indices, mismatched updates and reductions on bools are errors.
    #[test]
    fn bad_inputs_are_errors() {
        let d = Tensor::f32(vec![2, 2], vec![0.0; 4]);
        let op = Op::ScatterElements(ScatterElementsAttrs {
            axis: 0,
            reduction: ScatterReduction::None,
        });
        let i = Tensor::i64(vec![1, 2], vec![2, 0]);
        let u = Tensor::f32(vec![1, 2], vec![1.0, 1.0]);
        let e = crate::eval(&op, &[&d, &i, &u]).unwrap_err().to_string();
        assert!(
            e.starts_with("ScatterElements:") && e.contains("out of range"),
            "{e}"
        );
        let u3 = Tensor::f32(vec![1, 3], vec![1.0; 3]);
        assert!(crate::eval(&op, &[&d, &i, &u3]).is_err());
        let nd_op = Op::ScatterNd(ScatterNdAttrs {
            reduction: ScatterReduction::Add,
        });
        let b = Tensor::bool(vec![2], vec![true, false]);
        let bi = Tensor::i64(vec![1, 1], vec![0]);
        let bu = Tensor::bool(vec![1], vec![false]);
        assert!(crate::eval(&nd_op, &[&b, &bi, &bu]).is_err());
        let deep = Tensor::i64(vec![1, 3], vec![0, 0, 0]);
        assert!(crate::eval(&nd_op, &[&d, &deep, &u]).is_err());
    }
}
