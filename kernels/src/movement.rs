//! Data-movement ops: Reshape, Transpose, Concat, Split, Slice, Expand.
use super::binary::broadcast_to;
use super::index::{broadcast_shapes, strided_offsets, strides};
use super::transpose2d;
use super::{describe, make, map_storage, Elem, KResult};
use tessera_ir::op::SliceAttrs;
use tessera_ir::spec::slice_len;
use tessera_ir::{Tensor, TensorData};

/// Reshape to a static shape with the same element count.
pub(crate) fn reshape(shape: &[usize], x: &Tensor) -> KResult<Tensor> {
    let n: usize = shape.iter().product();
    if n != x.numel() {
        return Err(format!("cannot reshape {} to {:?}", describe(x), shape));
    }
    make(x.dtype, shape.to_vec(), x.data.clone())
}

/// Transpose: output axis i is input axis `perm[i]`.
pub(crate) fn transpose(perm: &[usize], x: &Tensor) -> KResult<Tensor> {
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!(
            "perm {perm:?} is not a permutation of the axes of {}",
            describe(x)
        ));
    }
    let in_strides = strides(&x.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    if let (TensorData::F32(v), Some((batch, rows, cols))) =
        (&x.data, batched_matrix(&x.shape, perm))
    {
        // A batch of matrix transposes ([B, S, D] → [B, D, S]; [S, B, D] → [D, S, B]):
        // the 2-D kernel on each matrix.
        let mut out = vec![0f32; v.len()];
        let m = rows * cols;
        if m > 0 {
            for (src, dst) in v.chunks_exact(m).zip(out.chunks_exact_mut(m)).take(batch) {
                transpose2d::transpose(src, dst, rows, cols);
            }
        }
        return make(x.dtype, out_shape, TensorData::F32(out));
    }
    // Output axes that are consecutive input axes move together: merged (and axes of size
    // 1 dropped; an empty axis stays, so an empty tensor stays empty), the copy walks the
    // longest contiguous runs (ShuffleNet's channel shuffle `[2, 24, 2, 8, 8]` by
    // `[0, 2, 1, 3, 4]`: runs of 64, not 8). Merging adjacent output axes keeps the
    // output's element order.
    let mut shape_m: Vec<usize> = Vec::with_capacity(rank);
    let mut s: Vec<isize> = Vec::with_capacity(rank);
    let mut prev: Option<usize> = None;
    for &a in perm.iter().filter(|&&a| x.shape[a] != 1) {
        match (prev, shape_m.last_mut(), s.last_mut()) {
            (Some(p), Some(n), Some(st)) if a == p + 1 => {
                *n *= x.shape[a];
                *st = in_strides[a] as isize;
            }
            _ => {
                shape_m.push(x.shape[a]);
                s.push(in_strides[a] as isize);
            }
        }
        prev = Some(a);
    }
    let data = map_storage!(&x.data, v => permute(v, &shape_m, &s));
    make(x.dtype, out_shape, data)
}

/// `(batch, rows, cols)` when transposing `shape` by `perm` is, once axes of size 1 are
/// dropped and axes that stay adjacent are merged, a batch of `[rows, cols]` → `[cols,
/// rows]` transposes (the merged permutation is the identity but for its last two axes,
/// swapped).
fn batched_matrix(shape: &[usize], perm: &[usize]) -> Option<(usize, usize, usize)> {
    // Output axes of size > 1, as input axes; then runs of consecutive input axes merged.
    let kept: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] > 1).collect();
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (first input axis, merged size)
    let mut last: Option<usize> = None;
    for &a in &kept {
        match (last, groups.last_mut()) {
            (Some(l), Some(g)) if a == l + 1 => g.1 *= shape[a],
            _ => groups.push((a, shape[a])),
        }
        last = Some(a);
    }
    let k = groups.len();
    if k < 2 {
        return None;
    }
    // The groups in input order must be: the output's first k-2 in the same order, then
    // the output's last group, then the output's second-to-last.
    let mut by_input = groups.clone();
    by_input.sort_unstable();
    let swapped = by_input[..k - 2] == groups[..k - 2]
        && by_input[k - 2] == groups[k - 1]
        && by_input[k - 1] == groups[k - 2];
    swapped.then(|| {
        let batch = groups[..k - 2].iter().map(|g| g.1).product();
        (batch, by_input[k - 2].1, by_input[k - 1].1)
    })
}

/// Reads `v` with input strides `s` permuted to the output axes: one offset per output row
/// (all axes but the last), then a contiguous copy when the last axis stays innermost, else a
/// strided loop.
fn permute<T: Copy>(v: &[T], out_shape: &[usize], s: &[isize]) -> Vec<T> {
    let rank = out_shape.len();
    // When the input's last axis is not the output's last (a matrix transpose in each
    // batch: [B, S, D] → [B, D, S]), a per-element strided row reads one cache line per
    // element; tiles read and write whole lines (4x faster on [8, 128, 256]).
    if rank >= 2 && s[rank - 1] != 1 && out_shape[rank - 1] > 1 {
        if let Some(p) = (0..rank - 1).find(|&p| s[p] == 1 && out_shape[p] > 1) {
            return permute_tiled(v, out_shape, s, p);
        }
    }
    gather_rows(v, out_shape, s, 0)
}

/// Edge of the square tiles of [`permute_tiled`] (16 f32 = one 64-byte line).
const TILE: usize = 16;

/// [`permute`] when output axis `p` reads the input's contiguous axis (`s[p] == 1`) and
/// the output's last axis does not: for every index of the other axes, a 2-D transpose of
/// `out_shape[p] × out_shape[last]` done in `TILE × TILE` tiles.
fn permute_tiled<T: Copy>(v: &[T], out_shape: &[usize], s: &[isize], p: usize) -> Vec<T> {
    let rank = out_shape.len();
    let n: usize = out_shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let (rows, cols) = (out_shape[p], out_shape[rank - 1]);
    let os = strides(out_shape);
    // The other axes: p and the last one set to 1 (offset 0), in row-major order.
    let mut outer = out_shape.to_vec();
    outer[p] = 1;
    outer[rank - 1] = 1;
    let out_strides: Vec<isize> = os.iter().map(|&x| x as isize).collect();
    let in_base = strided_offsets(&outer, s, 0);
    let out_base = strided_offsets(&outer, &out_strides, 0);
    let (row_out, col_in) = (os[p], s[rank - 1] as usize);
    // Every element is written below (each output index is one (outer, row, col) triple).
    let mut out = vec![v[0]; n];
    for (&ib, &ob) in in_base.iter().zip(&out_base) {
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    let dst = &mut out[ob + r * row_out..][c0..(c0 + TILE).min(cols)];
                    for (k, d) in dst.iter_mut().enumerate() {
                        *d = v[ib + r + (c0 + k) * col_in];
                    }
                }
            }
        }
    }
    out
}

/// The elements of `v` at `base + Σ iₐ·s[a]` over the indices of `shape`, in row-major
/// order: one offset per row (all axes but the last), then a contiguous copy of the row when
/// its stride is 1, else a strided loop (strides may be negative; every offset is in range
/// by construction of the caller).
fn gather_rows<T: Copy>(v: &[T], shape: &[usize], s: &[isize], base: isize) -> Vec<T> {
    let n: usize = shape.iter().product();
    let rank = shape.len();
    if n == 0 {
        return Vec::new();
    }
    if rank == 0 {
        return vec![v[base as usize]];
    }
    let inner = shape[rank - 1];
    let step = s[rank - 1];
    let rows = strided_offsets(&shape[..rank - 1], &s[..rank - 1], base);
    let mut out = Vec::with_capacity(n);
    for r in rows {
        if step == 1 {
            out.extend_from_slice(&v[r..r + inner]);
        } else {
            out.extend((0..inner as isize).map(|j| v[(r as isize + j * step) as usize]));
        }
    }
    out
}

fn concat_typed<T: Elem>(
    axis: usize,
    inputs: &[&Tensor],
    outer: usize,
    out_len: usize,
) -> KResult<TensorData> {
    let mut parts = Vec::with_capacity(inputs.len());
    for t in inputs {
        let v =
            T::slice(&t.data).ok_or_else(|| format!("operand types differ ({})", describe(t)))?;
        let block: usize = t.shape[axis..].iter().product();
        parts.push((v, block));
    }
    let mut out = Vec::with_capacity(out_len);
    for o in 0..outer {
        for (v, block) in &parts {
            out.extend_from_slice(&v[o * block..(o + 1) * block]);
        }
    }
    Ok(T::wrap(out))
}

/// Concatenation along `axis`.
pub(crate) fn concat(axis: usize, inputs: &[&Tensor]) -> KResult<Tensor> {
    let first = inputs[0];
    let rank = first.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for {}", describe(first)));
    }
    let mut out_shape = first.shape.clone();
    out_shape[axis] = 0;
    for t in inputs {
        let same_rest =
            t.shape.len() == rank && (0..rank).all(|d| d == axis || t.shape[d] == first.shape[d]);
        if !same_rest {
            return Err(format!(
                "cannot concatenate {} with {} along axis {axis}",
                describe(first),
                describe(t)
            ));
        }
        out_shape[axis] += t.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let n: usize = out_shape.iter().product();
    let data = match &first.data {
        TensorData::F32(_) => concat_typed::<f32>(axis, inputs, outer, n)?,
        TensorData::I64(_) => concat_typed::<i64>(axis, inputs, outer, n)?,
        TensorData::Bool(_) => concat_typed::<bool>(axis, inputs, outer, n)?,
    };
    make(first.dtype, out_shape, data)
}

/// Split along `axis` into pieces of the given sizes.
pub(crate) fn split(axis: usize, sizes: &[usize], x: &Tensor) -> KResult<Vec<Tensor>> {
    if axis >= x.shape.len() || sizes.iter().sum::<usize>() != x.shape[axis] {
        return Err(format!(
            "cannot split {} into {sizes:?} along axis {axis}",
            describe(x)
        ));
    }
    let s: Vec<isize> = strides(&x.shape).into_iter().map(|v| v as isize).collect();
    let mut start = 0usize;
    let mut outs = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let mut shape = x.shape.clone();
        shape[axis] = size;
        let base = start as isize * s[axis];
        outs.push(make(
            x.dtype,
            shape.clone(),
            map_storage!(&x.data, v => gather_rows(v, &shape, &s, base)),
        )?);
        start += size;
    }
    Ok(outs)
}

/// Static strided slice; steps may be negative.
pub(crate) fn slice(a: &SliceAttrs, x: &Tensor) -> KResult<Tensor> {
    let n = a.axes.len();
    if a.starts.len() != n || a.ends.len() != n || a.steps.len() != n {
        return Err("axes, starts, ends and steps differ in length".into());
    }
    let in_strides = strides(&x.shape);
    let mut shape = x.shape.clone();
    let mut s: Vec<isize> = in_strides.iter().map(|&v| v as isize).collect();
    let mut base = 0isize;
    for i in 0..n {
        let (axis, step) = (a.axes[i], a.steps[i]);
        if axis >= x.shape.len() || step == 0 {
            return Err(format!(
                "bad slice axis {axis} / step {step} for {}",
                describe(x)
            ));
        }
        let dim = x.shape[axis] as i64;
        // Clamp as ONNX does (the importer normally did already).
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (start, end) = if step > 0 {
            (
                norm(a.starts[i]).clamp(0, dim),
                norm(a.ends[i]).clamp(0, dim),
            )
        } else {
            let e = if a.ends[i] == -1 && a.starts[i] >= 0 {
                -1
            } else {
                norm(a.ends[i]).clamp(-1, dim - 1)
            };
            (norm(a.starts[i]).clamp(0, dim - 1), e)
        };
        let count = slice_len(start, end, step);
        shape[axis] = count;
        if count > 0 {
            base += start as isize * in_strides[axis] as isize;
        }
        // One element or none: the stride is never applied (and step · stride may not fit,
        // e.g. step i64::MAX). Otherwise (count - 1) · |step| < dim, so the product fits.
        s[axis] = if count <= 1 {
            0
        } else {
            (in_strides[axis] as isize)
                .checked_mul(step as isize)
                .ok_or_else(|| format!("slice step {step} overflows on axis {axis}"))?
        };
    }
    let data = map_storage!(&x.data, v => gather_rows(v, &shape, &s, base));
    make(x.dtype, shape, data)
}

/// Broadcast to `shape` (numpy rules, as ONNX Expand).
pub(crate) fn expand(shape: &[usize], x: &Tensor) -> KResult<Tensor> {
    let out = broadcast_shapes(&x.shape, shape)
        .ok_or_else(|| format!("cannot expand {} to {:?}", describe(x), shape))?;
    broadcast_to(x, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>() as i64;
        Tensor::i64(shape, (0..n).collect())
    }

    #[test]
    fn transpose_3d() {
        let t = transpose(&[2, 0, 1], &iota(vec![2, 3, 2])).unwrap();
        assert_eq!(t.shape, vec![2, 2, 3]);
        // out[k,i,j] = in[i,j,k] = 6i + 2j + k
        assert_eq!(t.as_i64().unwrap(), &[0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]);
        assert!(transpose(&[0, 0, 1], &iota(vec![2, 3, 2])).is_err());
    }

    /// Transposes an iota of `shape` by `perm`, asserts the result equals the per-element
    /// gather's, and returns that gather.
    fn transposed_by_gather(shape: &[usize], perm: &[usize]) -> Vec<i64> {
        let x = iota(shape.to_vec());
        let st = strides(shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let s: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
        let want = gather_rows(x.as_i64().unwrap(), &out_shape, &s, 0);
        let got = transpose(perm, &x).unwrap();
        assert_eq!(got.shape, out_shape);
        assert_eq!(got.as_i64().unwrap(), &want[..], "perm {perm:?}");
        want
    }

    /// Every permutation of a 4-D tensor (sizes around the tile edge): the tiled
    /// transposes give the per-element gather's result.
    #[test]
    fn tiled_permutes_equal_the_gather() {
        let shape = [3usize, 17, 2, 33];
        let xf = Tensor::f32(
            shape.to_vec(),
            (0..3 * 17 * 2 * 33).map(|a| a as f32).collect(),
        );
        let perms = [
            [0, 1, 2, 3],
            [0, 1, 3, 2],
            [0, 3, 1, 2],
            [3, 2, 1, 0],
            [1, 3, 0, 2],
            [2, 3, 0, 1],
            [3, 0, 1, 2],
            [0, 2, 3, 1],
        ];
        for perm in perms {
            let want = transposed_by_gather(&shape, &perm);
            // f32: the batched matrix kernel where the merged axes allow it.
            let gf = transpose(&perm, &xf).unwrap();
            let wf: Vec<f32> = want.iter().map(|&a| a as f32).collect();
            assert_eq!(gf.as_f32().unwrap(), &wf[..], "f32 perm {perm:?}");
        }
        // Axes of size 1 and runs of consecutive axes merged before the copy (a channel
        // shuffle among them): the per-element gather's result.
        for perm in [
            [0, 2, 1, 3, 4],
            [1, 0, 2, 4, 3],
            [2, 3, 4, 1, 0],
            [4, 1, 0, 2, 3],
        ] {
            transposed_by_gather(&[2, 1, 3, 4, 5], &perm);
        }
        // An empty axis among merged ones: the result stays empty.
        let empty = transpose(&[0, 2, 1, 3], &iota(vec![2, 0, 3, 4])).unwrap();
        assert_eq!(empty.shape, vec![2, 3, 0, 4]);
        assert!(empty.as_i64().unwrap().is_empty());
    }

    #[test]
    fn batched_matrices_found_after_merging_axes() {
        assert_eq!(
            batched_matrix(&[8, 128, 256], &[0, 2, 1]),
            Some((8, 128, 256))
        );
        assert_eq!(
            batched_matrix(&[8, 128, 256], &[2, 0, 1]),
            Some((1, 1024, 256))
        );
        assert_eq!(
            batched_matrix(&[2, 4, 8, 16], &[0, 1, 3, 2]),
            Some((8, 8, 16))
        );
        // Axes of size 1 anywhere do not matter.
        assert_eq!(
            batched_matrix(&[1, 5, 1, 7], &[2, 3, 0, 1]),
            Some((1, 5, 7))
        );
        // Identity and a swap of leading axes (inner rows stay whole) are not matrices.
        assert_eq!(batched_matrix(&[8, 128, 256], &[0, 1, 2]), None);
        assert_eq!(batched_matrix(&[8, 128, 256], &[1, 0, 2]), None);
        assert_eq!(batched_matrix(&[2, 3, 4], &[2, 1, 0]), None);
    }

    #[test]
    fn concat_middle_axis() {
        let a = iota(vec![2, 1, 2]);
        let b = Tensor::i64(vec![2, 2, 2], vec![10, 11, 12, 13, 14, 15, 16, 17]);
        let c = concat(1, &[&a, &b]).unwrap();
        assert_eq!(c.shape, vec![2, 3, 2]);
        assert_eq!(
            c.as_i64().unwrap(),
            &[0, 1, 10, 11, 12, 13, 2, 3, 14, 15, 16, 17]
        );
        assert!(concat(0, &[&a, &b]).is_err());
    }

    #[test]
    fn split_uneven() {
        let parts = split(1, &[1, 2], &iota(vec![2, 3])).unwrap();
        assert_eq!(parts[0].as_i64().unwrap(), &[0, 3]);
        assert_eq!(parts[1].shape, vec![2, 2]);
        assert_eq!(parts[1].as_i64().unwrap(), &[1, 2, 4, 5]);
    }

    #[test]
    fn slice_positive_and_negative_steps() {
        let x = iota(vec![3, 4]);
        let a = SliceAttrs {
            axes: vec![1],
            starts: vec![1],
            ends: vec![4],
            steps: vec![2],
        };
        assert_eq!(
            slice(&a, &x).unwrap().as_i64().unwrap(),
            &[1, 3, 5, 7, 9, 11]
        );
        // Reverse both axes: x[::-1, ::-1]; end -1 means "through index 0".
        let r = SliceAttrs {
            axes: vec![0, 1],
            starts: vec![2, 3],
            ends: vec![-1, -1],
            steps: vec![-1, -2],
        };
        let y = slice(&r, &x).unwrap();
        assert_eq!(y.shape, vec![3, 2]);
        assert_eq!(y.as_i64().unwrap(), &[11, 9, 7, 5, 3, 1]);
        let empty = SliceAttrs {
            axes: vec![0],
            starts: vec![2],
            ends: vec![1],
            steps: vec![1],
        };
        assert_eq!(slice(&empty, &x).unwrap().shape, vec![0, 4]);
    }

    /// `slice_len` at the i64 extremes: the count is ceil((end - start) / step) without
    /// overflow (it used to wrap and give 0 for step i64::MAX).
    #[test]
    fn slice_len_at_the_i64_extremes() {
        use tessera_ir::spec::slice_len;
        assert_eq!(slice_len(0, 10, 3), 4);
        assert_eq!(slice_len(5, 5, 1), 0);
        assert_eq!(slice_len(0, 10, 0), 0);
        assert_eq!(slice_len(0, 10, i64::MAX), 1);
        assert_eq!(slice_len(3, i64::MAX, i64::MAX), 1);
        assert_eq!(slice_len(9, -1, i64::MIN + 1), 1);
        assert_eq!(slice_len(9, -1, i64::MIN), 1);
        assert_eq!(slice_len(i64::MAX, i64::MIN, i64::MIN), 2);
        assert_eq!(slice_len(0, i64::MAX, 2), 1 << 62);
        assert_eq!(slice_len(i64::MIN, i64::MAX, 1) as u64, u64::MAX);
        assert_eq!(slice_len(i64::MAX, i64::MIN, -1) as u64, u64::MAX);
        assert_eq!(slice_len(i64::MIN, i64::MAX, i64::MAX), 3);
        assert_eq!(slice_len(i64::MAX, i64::MIN, i64::MIN + 1), 3);
        assert_eq!(slice_len(10, 0, 1), 0);
        assert_eq!(slice_len(0, 10, -1), 0);
    }

    /// Slices with steps i64::MAX / i64::MIN(+1) and unclamped i64 bounds give the numpy
    /// result, not an empty tensor or an overflow.
    #[test]
    fn slice_with_extreme_steps_and_bounds() {
        let x = iota(vec![3, 4]);
        let sl = |start: i64, end: i64, step: i64| {
            let a = SliceAttrs {
                axes: vec![1],
                starts: vec![start],
                ends: vec![end],
                steps: vec![step],
            };
            let y = slice(&a, &x).unwrap();
            (y.shape.clone(), y.as_i64().unwrap().to_vec())
        };
        assert_eq!(sl(0, 4, i64::MAX), (vec![3, 1], vec![0, 4, 8]));
        assert_eq!(sl(1, i64::MAX, i64::MAX), (vec![3, 1], vec![1, 5, 9]));
        assert_eq!(sl(3, i64::MIN, i64::MIN + 1), (vec![3, 1], vec![3, 7, 11]));
        assert_eq!(
            sl(i64::MAX, i64::MIN, i64::MIN),
            (vec![3, 1], vec![3, 7, 11])
        );
        assert_eq!(sl(i64::MIN, i64::MAX, 1), (vec![3, 4], (0..12).collect()));
        assert_eq!(
            sl(i64::MAX, i64::MIN, -1),
            (vec![3, 4], vec![3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8])
        );
        assert_eq!(
            sl(i64::MIN, i64::MAX, 3),
            (vec![3, 2], vec![0, 3, 4, 7, 8, 11])
        );
    }

    #[test]
    fn expand_and_reshape() {
        let x = Tensor::f32(vec![3, 1], vec![1.0, 2.0, 3.0]);
        let e = expand(&[2, 3, 2], &x).unwrap();
        assert_eq!(e.shape, vec![2, 3, 2]);
        assert_eq!(
            e.as_f32().unwrap(),
            &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
        );
        assert_eq!(reshape(&[1, 3], &x).unwrap().shape, vec![1, 3]);
        assert!(reshape(&[4], &x).is_err());
    }
}

#[cfg(test)]
mod row_copy_tests {
    use super::*;
    use crate::take;

    /// Slice and Split copy whole rows; the result equals the per-element offset gather
    /// they replaced, for contiguous, strided and reversed last axes, and every dtype class.
    #[test]
    fn row_copies_equal_the_element_gather() {
        let shape = vec![2, 3, 5];
        let x = Tensor::i64(shape.clone(), (0..30).collect());
        let s: Vec<isize> = strides(&shape).into_iter().map(|v| v as isize).collect();
        for (axes, starts, ends, steps) in [
            (vec![2], vec![1], vec![4], vec![1]),
            (vec![1, 2], vec![0, 4], vec![3, i64::MIN], vec![2, -2]),
            (vec![0, 2], vec![1, 0], vec![2, 5], vec![1, 3]),
        ] {
            let a = SliceAttrs {
                axes: axes.clone(),
                starts: starts.clone(),
                ends,
                steps: steps.clone(),
            };
            let got = slice(&a, &x).unwrap();
            // The old path: one offset per element.
            let mut st = s.clone();
            let mut base = 0isize;
            for (i, &ax) in axes.iter().enumerate() {
                base += starts[i] as isize * s[ax];
                st[ax] = s[ax] * steps[i] as isize;
            }
            let idx = strided_offsets(&got.shape, &st, base);
            assert_eq!(got.as_i64().unwrap(), take(x.as_i64().unwrap(), &idx));
        }
        let f = Tensor::f32(shape.clone(), (0..30).map(|e| e as f32).collect());
        let parts = split(2, &[2, 3], &f).unwrap();
        let idx = strided_offsets(&[2, 3, 3], &s, 2);
        assert_eq!(parts[1].as_f32().unwrap(), take(f.as_f32().unwrap(), &idx));
    }
}
