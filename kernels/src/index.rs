//! Index arithmetic shared by the kernels: row-major strides, numpy broadcasting and
//! strided offset enumeration.

/// Row-major strides (in elements) of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// numpy broadcast of two shapes, or `None` when they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides with which a tensor of `in_shape` is read when broadcast to `out_shape`
/// (0 along broadcast axes), or `None` when `in_shape` does not broadcast to `out_shape`.
pub fn broadcast_strides(in_shape: &[usize], out_shape: &[usize]) -> Option<Vec<isize>> {
    if in_shape.len() > out_shape.len() {
        return None;
    }
    let lead = out_shape.len() - in_shape.len();
    let in_strides = strides(in_shape);
    let mut s = vec![0isize; out_shape.len()];
    for (i, &d) in in_shape.iter().enumerate() {
        let o = out_shape[lead + i];
        if d == o {
            s[lead + i] = if d == 1 { 0 } else { in_strides[i] as isize };
        } else if d != 1 {
            return None;
        }
    }
    Some(s)
}

/// [`broadcast_strides`] of a tensor of rank ≤ 4 read as the 4-D `out_shape` (the masks of
/// attention kernels, over `[B, H, Sq, Sk]`).
pub(crate) fn broadcast_strides4(in_shape: &[usize], out_shape: [usize; 4]) -> Option<[usize; 4]> {
    let s = broadcast_strides(in_shape, &out_shape)?;
    // Strides of a broadcast read are non-negative (0 on broadcast axes).
    Some([s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize])
}

/// For every element of `shape` in row-major order, the offset `base + Σ idx[d]·strides[d]`.
///
/// Offsets must be non-negative for every index (the caller guarantees it, e.g. a negative
/// step slice starts from a base at its far end).
pub fn strided_offsets(shape: &[usize], strides: &[isize], base: isize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let rank = shape.len();
    if rank == 0 {
        return vec![base as usize];
    }
    let inner = shape[rank - 1];
    let inner_stride = strides[rank - 1];
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank - 1];
    let mut offset = base;
    loop {
        for j in 0..inner as isize {
            out.push((offset + j * inner_stride) as usize);
        }
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            offset += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            offset -= strides[d] * shape[d] as isize;
            idx[d] = 0;
        }
    }
}

/// Offsets into a tensor of `in_shape` for each element of `out_shape` under numpy
/// broadcasting, or `None` when the shapes are incompatible.
pub fn broadcast_offsets(in_shape: &[usize], out_shape: &[usize]) -> Option<Vec<usize>> {
    let s = broadcast_strides(in_shape, out_shape)?;
    Some(strided_offsets(out_shape, &s, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn broadcast_shapes_numpy_rules() {
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4, 3]), None);
        assert_eq!(broadcast_shapes(&[0, 3], &[1, 3]), Some(vec![0, 3]));
    }

    #[test]
    fn broadcast_offsets_of_a_column() {
        // [2,1] broadcast to [2,3]: each row repeats its element.
        assert_eq!(
            broadcast_offsets(&[2, 1], &[2, 3]),
            Some(vec![0, 0, 0, 1, 1, 1])
        );
        // [3] broadcast to [2,3]: rows repeat the vector.
        assert_eq!(
            broadcast_offsets(&[3], &[2, 3]),
            Some(vec![0, 1, 2, 0, 1, 2])
        );
        assert_eq!(broadcast_offsets(&[2], &[3]), None);
    }

    #[test]
    fn strided_offsets_negative_step() {
        // Reverse a length-4 vector: base 3, stride -1.
        assert_eq!(strided_offsets(&[4], &[-1], 3), vec![3, 2, 1, 0]);
        // Transpose of a 2x3 matrix: shape [3,2], strides [1,3].
        assert_eq!(strided_offsets(&[3, 2], &[1, 3], 0), vec![0, 3, 1, 4, 2, 5]);
    }
}
