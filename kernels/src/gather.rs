//! Gather, GatherND and GatherElements (negative indices count from the end).
use super::index::strides;
use super::{describe, make, Elem, KResult};
use tessera_ir::{Tensor, TensorData};

/// Normalises an index against an extent, or fails naming it.
pub(crate) fn norm_index(i: i64, dim: usize) -> KResult<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if j < 0 || j >= dim as i64 {
        return Err(format!("index {i} out of range for extent {dim}"));
    }
    Ok(j as usize)
}

/// The values of an integer index tensor.
pub(crate) fn indices_of(t: &Tensor) -> KResult<&[i64]> {
    t.as_i64()
        .ok_or_else(|| format!("indices must be integers, got {}", describe(t)))
}

fn gather_typed<T: Elem>(
    data: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        let base = o * dim * inner;
        for &i in idx {
            out.extend_from_slice(&data[base + i * inner..base + (i + 1) * inner]);
        }
    }
    out
}

/// Gather along `axis`: `out[a.., i.., b..] = data[a.., indices[i..], b..]`.
pub(crate) fn gather(axis: usize, data: &Tensor, indices: &Tensor) -> KResult<Tensor> {
    if axis >= data.shape.len() {
        return Err(format!("axis {axis} out of range for {}", describe(data)));
    }
    let dim = data.shape[axis];
    let idx: Vec<usize> = indices_of(indices)?
        .iter()
        .map(|&i| norm_index(i, dim))
        .collect::<KResult<_>>()?;
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut out_shape = data.shape[..axis].to_vec();
    out_shape.extend_from_slice(&indices.shape);
    out_shape.extend_from_slice(&data.shape[axis + 1..]);
    let out = match &data.data {
        TensorData::F32(v) => f32::wrap(gather_typed(v, outer, dim, inner, &idx)),
        TensorData::I64(v) => i64::wrap(gather_typed(v, outer, dim, inner, &idx)),
        TensorData::Bool(v) => bool::wrap(gather_typed(v, outer, dim, inner, &idx)),
    };
    make(data.dtype, out_shape, out)
}

fn gather_nd_typed<T: Elem>(data: &[T], starts: &[usize], block: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(starts.len() * block);
    for &s in starts {
        out.extend_from_slice(&data[s..s + block]);
    }
    out
}

/// GatherND with `batch_dims` leading batch axes shared by data and indices.
pub(crate) fn gather_nd(batch_dims: usize, data: &Tensor, indices: &Tensor) -> KResult<Tensor> {
    let ind = indices_of(indices)?;
    let (r, q) = (data.shape.len(), indices.shape.len());
    let k = *indices.shape.last().ok_or("indices must have rank >= 1")?;
    if q < batch_dims + 1
        || r < batch_dims + k
        || data.shape[..batch_dims] != indices.shape[..batch_dims]
    {
        return Err(format!(
            "incompatible data {} and indices {} for batch_dims {batch_dims}",
            describe(data),
            describe(indices)
        ));
    }
    let batch: usize = data.shape[..batch_dims].iter().product();
    let batch_stride: usize = data.shape[batch_dims..].iter().product();
    let block: usize = data.shape[batch_dims + k..].iter().product();
    let ds = strides(&data.shape);
    let per_batch = indices.shape[batch_dims..q - 1].iter().product::<usize>();
    let mut starts = Vec::with_capacity(per_batch * batch);
    for b in 0..batch {
        for t in 0..per_batch {
            let tuple = b * per_batch + t;
            let mut off = b * batch_stride;
            for j in 0..k {
                off += norm_index(ind[tuple * k + j], data.shape[batch_dims + j])?
                    * ds[batch_dims + j];
            }
            starts.push(off);
        }
    }
    let mut out_shape = indices.shape[..q - 1].to_vec();
    out_shape.extend_from_slice(&data.shape[batch_dims + k..]);
    let out = match &data.data {
        TensorData::F32(v) => f32::wrap(gather_nd_typed(v, &starts, block)),
        TensorData::I64(v) => i64::wrap(gather_nd_typed(v, &starts, block)),
        TensorData::Bool(v) => bool::wrap(gather_nd_typed(v, &starts, block)),
    };
    make(data.dtype, out_shape, out)
}

/// GatherElements along `axis`: `out[i] = data[i with coordinate axis replaced by
/// indices[i]]`; indices have data's rank and, off the axis, extents at most data's.
pub(crate) fn gather_elements(axis: usize, data: &Tensor, indices: &Tensor) -> KResult<Tensor> {
    let ind = indices_of(indices)?;
    let (ds, is) = (&data.shape, &indices.shape);
    let fits = ds.len() == is.len()
        && axis < ds.len()
        && (0..ds.len()).all(|a| a == axis || is[a] <= ds[a]);
    if !fits {
        return Err(format!(
            "indices {} do not fit data {} on axis {axis}",
            describe(indices),
            describe(data)
        ));
    }
    let offsets = element_offsets(ds, is, ind, axis)?;
    let out = match &data.data {
        TensorData::F32(v) => f32::wrap(super::take(v, &offsets)),
        TensorData::I64(v) => i64::wrap(super::take(v, &offsets)),
        TensorData::Bool(v) => bool::wrap(super::take(v, &offsets)),
    };
    make(data.dtype, is.clone(), out)
}

/// The flat offset into data of shape `ds` of every position of indices of shape `is` (the
/// same rank) with its coordinate on `axis` replaced by its index value (GatherElements's
/// and ScatterElements's addressing).
pub(crate) fn element_offsets(
    ds: &[usize],
    is: &[usize],
    ind: &[i64],
    axis: usize,
) -> KResult<Vec<usize>> {
    let (dst, ist) = (strides(ds), strides(is));
    let mut offsets = Vec::with_capacity(ind.len());
    for (flat, &i) in ind.iter().enumerate() {
        let mut off = 0;
        for a in 0..is.len() {
            let c = (flat / ist[a]) % is[a];
            let c = if a == axis { norm_index(i, ds[a])? } else { c };
            off += c * dst[a];
        }
        offsets.push(off);
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_axis1_negative_indices() {
        let d = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let i = Tensor::i64(vec![2], vec![-1, 0]);
        let g = gather(1, &d, &i).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.as_f32().unwrap(), &[3.0, 1.0, 6.0, 4.0]);
        let bad = Tensor::i64(vec![1], vec![3]);
        assert!(gather(1, &d, &bad).unwrap_err().contains("out of range"));
    }

    #[test]
    fn gather_scalar_index_drops_axis() {
        let d = Tensor::i64(vec![3, 2], vec![0, 1, 2, 3, 4, 5]);
        let g = gather(0, &d, &Tensor::i64(vec![], vec![2])).unwrap();
        assert_eq!(g.shape, vec![2]);
        assert_eq!(g.as_i64().unwrap(), &[4, 5]);
    }

    #[test]
    fn gather_elements_examples_from_onnx_spec() {
        // axis 1: data [[1,2],[3,4]], indices [[0,0],[1,0]] -> [[1,1],[4,3]]
        let d = Tensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let g = gather_elements(1, &d, &Tensor::i64(vec![2, 2], vec![0, 0, 1, 0])).unwrap();
        assert_eq!(g.as_f32().unwrap(), &[1.0, 1.0, 4.0, 3.0]);
        // axis 0, fewer rows than data, a negative index: data 3x3 of 1..=9,
        // indices [[1,2,0],[2,0,-3]] -> [[4,8,3],[7,2,3]]
        let d = Tensor::i64(vec![3, 3], (1..=9).collect());
        let i = Tensor::i64(vec![2, 3], vec![1, 2, 0, 2, 0, -3]);
        let g = gather_elements(0, &d, &i).unwrap();
        assert_eq!(g.shape, vec![2, 3]);
        assert_eq!(g.as_i64().unwrap(), &[4, 8, 3, 7, 2, 3]);
        let bad = Tensor::i64(vec![1, 1], vec![3]);
        assert!(gather_elements(0, &d, &bad)
            .unwrap_err()
            .contains("out of range"));
        let wide = Tensor::i64(vec![1, 4], vec![0; 4]);
        assert!(gather_elements(0, &d, &wide)
            .unwrap_err()
            .contains("do not fit"));
    }

    #[test]
    fn gather_nd_examples_from_onnx_spec() {
        // Example 2: data [[0,1],[2,3]], indices [[1],[0]] -> [[2,3],[0,1]]
        let d = Tensor::i64(vec![2, 2], vec![0, 1, 2, 3]);
        let g = gather_nd(0, &d, &Tensor::i64(vec![2, 1], vec![1, 0])).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.as_i64().unwrap(), &[2, 3, 0, 1]);
        // Example 5 (batch_dims=1): data [[[0,1],[2,3]],[[4,5],[6,7]]], indices [[1],[0]]
        // -> [[2,3],[4,5]]
        let d = Tensor::i64(vec![2, 2, 2], (0..8).collect());
        let g = gather_nd(1, &d, &Tensor::i64(vec![2, 1], vec![1, 0])).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.as_i64().unwrap(), &[2, 3, 4, 5]);
        // Full-index tuples: indices [[0,0],[1,1]] -> [0,3]
        let d = Tensor::i64(vec![2, 2], vec![0, 1, 2, 3]);
        let g = gather_nd(0, &d, &Tensor::i64(vec![2, 2], vec![0, 0, -1, -1])).unwrap();
        assert_eq!(g.as_i64().unwrap(), &[0, 3]);
    }
}
