//! Data movement on the device: Reshape (free), Transpose, Concat, Split, Slice, Expand,
//! Gather (plain and vocabulary-sharded), Trilu, and the range/axis moves used by the
//! executor and the collectives. All by element size, so every dtype works.
use super::super::buffer::{Class, DeviceData, DeviceTensor};
use super::super::context::Lane;
use super::super::launch_cfg;
use super::super::meta::StridedMeta;
use super::super::CudaError;
use super::{copy_to_new, launch, launch_new, strided_copy};
use tessera_ir::numel;
use tessera_ir::op::SliceAttrs;

/// Reshape: same buffer, new shape.
pub fn reshape(x: &DeviceTensor, shape: &[usize]) -> Result<DeviceTensor, CudaError> {
    if numel(shape) != x.numel() {
        return Err(CudaError::Plan(format!(
            "Reshape of {:?} to {shape:?}: element counts differ",
            x.shape
        )));
    }
    Ok(DeviceTensor {
        dtype: x.dtype,
        shape: shape.to_vec(),
        data: x.data.clone(),
    })
}

/// Transpose by `perm`.
pub fn transpose(lane: &Lane, x: &DeviceTensor, perm: &[usize]) -> Result<DeviceTensor, CudaError> {
    let meta = StridedMeta::permute(&x.shape, perm)?;
    let shape = perm.iter().map(|&p| x.shape[p]).collect();
    copy_to_new(lane, x, &meta, shape)
}

/// Moves axis `from` to position `to`.
pub fn move_axis(
    lane: &Lane,
    x: &DeviceTensor,
    from: usize,
    to: usize,
) -> Result<DeviceTensor, CudaError> {
    if from >= x.shape.len() || to >= x.shape.len() {
        return Err(CudaError::Plan(format!(
            "move axis {from} to {to} in shape {:?}",
            x.shape
        )));
    }
    if from == to {
        return Ok(x.clone());
    }
    let mut perm: Vec<usize> = (0..x.shape.len()).filter(|d| *d != from).collect();
    perm.insert(to, from);
    transpose(lane, x, &perm)
}

/// Concat along `axis`.
pub fn concat(
    lane: &Lane,
    parts: &[&DeviceTensor],
    axis: usize,
) -> Result<DeviceTensor, CudaError> {
    let first = parts
        .first()
        .ok_or_else(|| CudaError::Plan("Concat of no tensors".into()))?;
    if axis >= first.shape.len() {
        return Err(CudaError::Plan(format!(
            "Concat axis {axis} out of range for shape {:?}",
            first.shape
        )));
    }
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for p in parts {
        let same = p.shape.len() == shape.len()
            && (0..shape.len()).all(|d| d == axis || p.shape[d] == shape[d]);
        if !same || p.class() != first.class() {
            return Err(CudaError::Plan(format!(
                "Concat of {:?} ({}) with {:?} ({}) along axis {axis}",
                first.shape, first.dtype, p.shape, p.dtype
            )));
        }
        shape[axis] += p.shape[axis];
    }
    let mut out = DeviceData::zeros(lane, first.class(), numel(&shape))?;
    let mut offset = 0;
    for p in parts {
        if p.numel() > 0 {
            strided_copy(
                lane,
                &StridedMeta::place(&p.shape, &shape, axis, offset)?,
                &p.data,
                &mut out,
            )?;
        }
        offset += p.shape[axis];
    }
    Ok(DeviceTensor::new(first.dtype, shape, out))
}

/// `[start, end)` of `axis`, as a new contiguous tensor.
pub fn take_range(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    start: usize,
    end: usize,
) -> Result<DeviceTensor, CudaError> {
    if axis >= x.shape.len() || start > end || end > x.shape[axis] {
        return Err(CudaError::Plan(format!(
            "range {start}..{end} of axis {axis} of shape {:?}",
            x.shape
        )));
    }
    let mut piece = x.shape.clone();
    piece[axis] = end - start;
    copy_to_new(
        lane,
        x,
        &StridedMeta::take(&x.shape, &piece, axis, start)?,
        piece,
    )
}

/// Split into `sizes` along `axis`.
pub fn split(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    sizes: &[usize],
) -> Result<Vec<DeviceTensor>, CudaError> {
    if axis >= x.shape.len() || sizes.iter().sum::<usize>() != x.shape[axis] {
        return Err(CudaError::Plan(format!(
            "Split of {:?} into {sizes:?} along axis {axis}",
            x.shape
        )));
    }
    let mut start = 0;
    sizes
        .iter()
        .map(|&s| {
            let t = take_range(lane, x, axis, start, start + s);
            start += s;
            t
        })
        .collect()
}

/// Static strided Slice.
pub fn slice(lane: &Lane, x: &DeviceTensor, a: &SliceAttrs) -> Result<DeviceTensor, CudaError> {
    let (meta, shape) = StridedMeta::slice(&x.shape, &a.axes, &a.starts, &a.ends, &a.steps)?;
    copy_to_new(lane, x, &meta, shape)
}

/// Expand (broadcast) to `shape`.
pub fn expand(lane: &Lane, x: &DeviceTensor, shape: &[usize]) -> Result<DeviceTensor, CudaError> {
    // ONNX Expand broadcasts both ways: the result is the broadcast of the two shapes.
    let out = super::super::meta::broadcast_shape(&x.shape, shape)?;
    copy_to_new(lane, x, &StridedMeta::expand(&x.shape, &out)?, out)
}

/// Gather along `axis`. `sharded = Some((offset, rows, full_len))`: this tensor holds rows
/// `[offset, offset + rows)` of a `full_len`-row table along axis 0; other rows give 0.
pub fn gather(
    lane: &Lane,
    data: &DeviceTensor,
    indices: &DeviceTensor,
    axis: usize,
    sharded: Option<(usize, usize, usize)>,
) -> Result<Option<DeviceTensor>, CudaError> {
    if indices.class() != Class::I64 {
        return Ok(None);
    }
    if axis >= data.shape.len() {
        return Err(CudaError::Plan(format!(
            "Gather axis {axis} out of range for shape {:?}",
            data.shape
        )));
    }
    let outer: usize = data.shape[..axis].iter().product();
    let held = data.shape[axis];
    let inner: usize = data.shape[axis + 1..].iter().product();
    let (offset, wrap) = match sharded {
        None => (0, held),
        Some((offset, rows, full)) => {
            if rows != held || axis != 0 {
                return Err(CudaError::Plan(format!(
                    "sharded gather: table {:?} does not hold {rows} rows on axis 0",
                    data.shape
                )));
            }
            (offset, full)
        }
    };
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    let n = numel(&shape);
    let cfg = launch_cfg::elementwise(n);
    let (ou, he, inn, ni, wr, of) = (
        outer as i64,
        held as i64,
        inner as i64,
        indices.numel() as i64,
        wrap as i64,
        offset as i64,
    );
    let name = data.class().copy_kernel("gather");
    let mut bad = lane
        .stream
        .alloc_zeros::<u32>(1)
        .map_err(CudaError::driver)?;
    let (idx, d) = (indices.arg(), data.arg());
    let out = launch_new!(
        lane,
        data.class(),
        n,
        &name,
        cfg,
        &ou,
        &he,
        &inn,
        &ni,
        &wr,
        &of,
        idx,
        d,
        &mut bad
    );
    // The CPU path refuses an out-of-range index; the kernel flags it (one flag download,
    // which waits for the lane).
    let flag = lane.stream.clone_dtoh(&bad).map_err(CudaError::driver)?;
    lane.synchronize()?;
    if flag.first().copied().unwrap_or(0) != 0 {
        let host = indices.download(lane)?;
        let first = match &host.data {
            tessera_ir::TensorData::I64(v) => first_out_of_range(v, wrap),
            _ => None,
        };
        return Err(CudaError::Plan(match first {
            Some(i) => format!("Gather: index {i} out of range for extent {wrap}"),
            None => format!("Gather: an index is out of range for extent {wrap}"),
        }));
    }
    Ok(Some(DeviceTensor::new(data.dtype, shape, out)))
}

/// The first index outside `[-len, len)` (the range the CPU Gather accepts).
pub fn first_out_of_range(idx: &[i64], len: usize) -> Option<i64> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    idx.iter().copied().find(|&i| i < -len || i >= len)
}

/// Trilu over the last two axes.
pub fn trilu(
    lane: &Lane,
    x: &DeviceTensor,
    upper: bool,
    k: i64,
) -> Result<DeviceTensor, CudaError> {
    let r = x.shape.len();
    if r < 2 {
        return Err(CudaError::Plan(format!(
            "Trilu of shape {:?} (needs 2 axes)",
            x.shape
        )));
    }
    let n = x.numel();
    let cfg = launch_cfg::elementwise(n);
    let (n64, rows, cols, up) = (
        n as i64,
        x.shape[r - 2] as i64,
        x.shape[r - 1] as i64,
        upper as i32,
    );
    let name = x.class().copy_kernel("trilu");
    let out = launch_new!(
        lane,
        x.class(),
        n,
        &name,
        cfg,
        &n64,
        &rows,
        &cols,
        &k,
        &up,
        x.arg()
    );
    Ok(x.same_shape(x.dtype, out))
}

#[cfg(test)]
mod tests {
    use super::first_out_of_range;

    #[test]
    fn out_of_range_gather_indices_match_the_cpu_rule() {
        assert_eq!(first_out_of_range(&[0, 5, -6, -1], 6), None);
        assert_eq!(first_out_of_range(&[0, 6, 9], 6), Some(6));
        assert_eq!(first_out_of_range(&[-7], 6), Some(-7));
        assert_eq!(first_out_of_range(&[i64::MIN], 6), Some(i64::MIN));
        assert_eq!(first_out_of_range(&[0], 0), Some(0));
    }
}
