//! Inference for the data-movement ops: Reshape, Transpose, Concat, Split, Slice, Gather,
//! GatherND, Expand.
use super::{broadcast_shapes, Cx, TypedShape};
use crate::op::SliceAttrs;
use crate::{numel, DType, IrError};

/// Normalises one ONNX Slice axis: negative `start`/`end` count from the back, then both are
/// clamped to `[0, dim]` for a positive step and to `[0, dim-1]` / `[-1, dim-1]` for a negative
/// one (the ONNX rules). Returns the clamped `(start, end)` that [`SliceAttrs`] stores.
pub fn normalize_slice(start: i64, end: i64, step: i64, dim: usize) -> (i64, i64) {
    let dim = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        (s.clamp(0, dim), e.clamp(0, dim))
    } else {
        (s.max(0).min(dim - 1), e.clamp(-1, dim - 1))
    }
}

/// Number of elements a clamped slice `start..end` by `step` selects.
pub(crate) fn slice_len(start: i64, end: i64, step: i64) -> usize {
    let n = if step > 0 {
        (end - start + step - 1) / step
    } else {
        (start - end + (-step) - 1) / (-step)
    };
    n.max(0) as usize
}

impl Cx<'_> {
    pub(super) fn reshape(&self, shape: &[usize]) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, x) = self.input(0);
        if numel(&x) != numel(shape) {
            return Err(self.err(format!(
                "cannot reshape {x:?} ({} elements) to {shape:?} ({} elements)",
                numel(&x),
                numel(shape)
            )));
        }
        Ok((d, shape.to_vec()))
    }

    pub(super) fn transpose(&self, perm: &[usize]) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, x) = self.input(0);
        let mut seen = vec![false; x.len()];
        let is_perm = perm.len() == x.len()
            && perm
                .iter()
                .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
        if !is_perm {
            return Err(self.err(format!(
                "perm {perm:?} is not a permutation of the axes of {x:?}"
            )));
        }
        Ok((d, perm.iter().map(|&p| x[p]).collect()))
    }

    pub(super) fn concat(&self, axis: usize) -> Result<TypedShape, IrError> {
        self.arity(1, usize::MAX)?;
        let d = self.same_dtype(&(0..self.inputs.len()).collect::<Vec<_>>())?;
        let first = self.inputs[0].1;
        self.axis_in_range(axis, first.len())?;
        let mut out = first.to_vec();
        out[axis] = 0;
        for (_, s) in self.inputs {
            let same_rest = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same_rest {
                return Err(self.err(format!(
                    "inputs {first:?} and {s:?} differ outside the concat axis {axis}"
                )));
            }
            out[axis] += s[axis];
        }
        Ok((d, out))
    }

    pub(super) fn split(&self, axis: usize, sizes: &[usize]) -> Result<Vec<TypedShape>, IrError> {
        self.arity(1, 1)?;
        let (d, x) = self.input(0);
        self.axis_in_range(axis, x.len())?;
        if sizes.iter().sum::<usize>() != x[axis] || sizes.is_empty() {
            return Err(self.err(format!(
                "split sizes {sizes:?} do not sum to extent {} of axis {axis} of {x:?}",
                x[axis]
            )));
        }
        Ok(sizes
            .iter()
            .map(|&n| {
                let mut s = x.clone();
                s[axis] = n;
                (d, s)
            })
            .collect())
    }

    pub(super) fn slice(&self, a: &SliceAttrs) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, mut x) = self.input(0);
        let n = a.axes.len();
        if a.starts.len() != n || a.ends.len() != n || a.steps.len() != n {
            return Err(self.err(format!(
                "axes/starts/ends/steps lengths differ: {}/{}/{}/{}",
                n,
                a.starts.len(),
                a.ends.len(),
                a.steps.len()
            )));
        }
        let mut seen = vec![false; x.len()];
        for i in 0..n {
            let (axis, start, end, step) = (a.axes[i], a.starts[i], a.ends[i], a.steps[i]);
            self.axis_in_range(axis, x.len())?;
            if std::mem::replace(&mut seen[axis], true) {
                return Err(self.err(format!("axis {axis} sliced twice in {:?}", a.axes)));
            }
            let dim = x[axis] as i64;
            let ok = match step {
                0 => false,
                s if s > 0 => (0..=dim).contains(&start) && (0..=dim).contains(&end),
                _ => (-1..dim).contains(&start) && (-1..dim).contains(&end),
            };
            if !ok {
                return Err(self.err(format!(
                    "slice {start}..{end} step {step} on axis {axis} is not clamped to the extent of {x:?}"
                )));
            }
            x[axis] = slice_len(start, end, step);
        }
        Ok((d, x))
    }

    pub(super) fn gather(&self, axis: usize) -> Result<TypedShape, IrError> {
        self.arity(2, 2)?;
        let (d, data) = self.input(0);
        let (di, idx) = self.input(1);
        if !di.is_int() {
            return Err(self.err(format!("indices must be integers, got {di}")));
        }
        self.axis_in_range(axis, data.len())?;
        let mut out = data[..axis].to_vec();
        out.extend_from_slice(&idx);
        out.extend_from_slice(&data[axis + 1..]);
        Ok((d, out))
    }

    pub(super) fn gather_nd(&self, batch_dims: usize) -> Result<TypedShape, IrError> {
        self.arity(2, 2)?;
        let (d, data) = self.input(0);
        let (di, idx) = self.input(1);
        if !di.is_int() {
            return Err(self.err(format!("indices must be integers, got {di}")));
        }
        let (r, q, b) = (data.len(), idx.len(), batch_dims);
        if q == 0 || r == 0 || b >= q.min(r) {
            return Err(self.err(format!(
                "batch_dims {b} too large for data {data:?} and indices {idx:?}"
            )));
        }
        if data[..b] != idx[..b] {
            return Err(self.err(format!(
                "batch dims of data {data:?} and indices {idx:?} differ"
            )));
        }
        let k = idx[q - 1];
        if k < 1 || b + k > r {
            return Err(self.err(format!(
                "indices last dim {k} invalid for data {data:?} with batch_dims {b}"
            )));
        }
        let mut out = idx[..q - 1].to_vec();
        out.extend_from_slice(&data[b + k..]);
        Ok((d, out))
    }

    pub(super) fn expand(&self, shape: &[usize]) -> Result<TypedShape, IrError> {
        self.arity(1, 1)?;
        let (d, x): (DType, Vec<usize>) = self.input(0);
        let out = broadcast_shapes(&x, shape)
            .ok_or_else(|| self.err(format!("cannot expand {x:?} to {shape:?}")))?;
        Ok((d, out))
    }
}
