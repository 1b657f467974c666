//! Collectives between rank processes through NCCL (one GPU per process).
//!
//! NCCL moves flat buffers; the layout work around it is done with the movement kernels:
//! * all-gather along `axis`: NCCL stacks the pieces as `[world, ...local]`; moving that
//!   leading axis to `axis` and merging it with the next gives the concatenation;
//! * reduce-scatter to `axis`: the input is viewed as `[.., world, chunk, ..]`, the
//!   `world` axis moved to the front, then NCCL reduce-scatters contiguous chunks;
//! * all-to-all `axis → to_axis`: the `to_axis` chunks are moved to a leading `world`
//!   axis, exchanged with grouped `ncclSend`/`ncclRecv`, and the received leading axis is
//!   moved to `axis` and merged, as for all-gather;
//! * broadcast from the group's first rank.
//!
//! Groups must span all ranks (1-D tensor parallelism); other groups are refused.
use super::buffer::{DeviceData, DeviceTensor};
use super::context::Lane;
use super::ops;
use super::CudaError;
use crate::collectives::CollectiveSpec;
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, NcclType, ReduceOp};
use tessera_ir::plan::CollectiveKind;

/// The split axis of `spec`, or an error naming the collective.
pub fn need_axis(spec: &CollectiveSpec) -> Result<usize, CudaError> {
    spec.axis
        .ok_or_else(|| CudaError::Plan(format!("{} without an axis", spec.kind.as_str())))
}

/// The output split axis of an all-to-all.
pub fn need_to_axis(spec: &CollectiveSpec) -> Result<usize, CudaError> {
    spec.to_axis
        .ok_or_else(|| CudaError::Plan("all_to_all without to_axis".into()))
}

/// Refuses any group but the full one, `0..world` in order (1-D tensor parallelism).
pub fn check_full_group(group: &[usize], world: usize) -> Result<(), CudaError> {
    if group.len() != world || group.iter().enumerate().any(|(i, r)| i != *r) {
        return Err(CudaError::Unsupported(format!(
            "collective over group {group:?}; only the full group 0..{world} is supported"
        )));
    }
    Ok(())
}

/// Shape with `shape[axis]` split into `[parts, shape[axis] / parts]`.
pub fn split_axis_shape(
    shape: &[usize],
    axis: usize,
    parts: usize,
) -> Result<Vec<usize>, CudaError> {
    match shape.get(axis) {
        Some(&e) if parts > 0 && e % parts == 0 => {
            let mut s = shape.to_vec();
            s[axis] = e / parts;
            s.insert(axis, parts);
            Ok(s)
        }
        _ => Err(CudaError::Plan(format!(
            "axis {axis} of {shape:?} does not split into {parts} parts"
        ))),
    }
}

/// Shape with axes `axis` and `axis + 1` merged.
pub fn merge_axis_shape(shape: &[usize], axis: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if axis + 1 < s.len() {
        s[axis] *= s[axis + 1];
        s.remove(axis + 1);
    }
    s
}

fn reshaped(x: &DeviceTensor, shape: Vec<usize>) -> DeviceTensor {
    DeviceTensor {
        dtype: x.dtype,
        shape,
        data: x.data.clone(),
    }
}

/// The NCCL call moving one flat buffer.
#[derive(Debug, Clone, Copy)]
enum Wire {
    AllReduce,
    Broadcast(i32),
    AllGather,
    ReduceScatter,
    /// Grouped send/recv of `chunk`-element pieces, one per rank.
    Exchange(usize),
}

/// Performs `spec` over `group` on this rank's `x` through `comm` (whose stream is `lane`'s).
pub fn nccl_collective(
    lane: &Lane,
    comm: &Comm,
    group: &[usize],
    spec: &CollectiveSpec,
    x: &DeviceTensor,
) -> Result<DeviceTensor, CudaError> {
    let world = comm.world_size();
    check_full_group(group, world)?;
    match spec.kind {
        CollectiveKind::AllReduce => {
            let out = wire(lane, comm, Wire::AllReduce, x, x.numel())?;
            Ok(DeviceTensor::new(x.dtype, x.shape.clone(), out))
        }
        CollectiveKind::Broadcast => {
            let out = wire(lane, comm, Wire::Broadcast(group[0] as i32), x, x.numel())?;
            Ok(DeviceTensor::new(x.dtype, x.shape.clone(), out))
        }
        CollectiveKind::AllGather => {
            let axis = need_axis(spec)?;
            let out = wire(lane, comm, Wire::AllGather, x, x.numel() * world)?;
            let mut stacked = vec![world];
            stacked.extend_from_slice(&x.shape);
            unstack(lane, DeviceTensor::new(x.dtype, stacked, out), axis)
        }
        CollectiveKind::ReduceScatter => {
            let axis = need_axis(spec)?;
            let viewed = reshaped(x, split_axis_shape(&x.shape, axis, world)?);
            let front = ops::movement::move_axis(lane, &viewed, axis, 0)?;
            let mut local = x.shape.clone();
            local[axis] /= world;
            let out = wire(lane, comm, Wire::ReduceScatter, &front, x.numel() / world)?;
            Ok(DeviceTensor::new(x.dtype, local, out))
        }
        CollectiveKind::AllToAll => {
            let (axis, to_axis) = (need_axis(spec)?, need_to_axis(spec)?);
            let viewed = reshaped(x, split_axis_shape(&x.shape, to_axis, world)?);
            let front = ops::movement::move_axis(lane, &viewed, to_axis, 0)?;
            let out = wire(
                lane,
                comm,
                Wire::Exchange(x.numel() / world),
                &front,
                x.numel(),
            )?;
            unstack(
                lane,
                DeviceTensor::new(x.dtype, front.shape.clone(), out),
                axis,
            )
        }
    }
}

/// `[world, ...local]` → concatenation of the pieces along `axis` of `local`.
fn unstack(lane: &Lane, stacked: DeviceTensor, axis: usize) -> Result<DeviceTensor, CudaError> {
    let moved = ops::movement::move_axis(lane, &stacked, 0, axis)?;
    let shape = merge_axis_shape(&moved.shape, axis);
    Ok(reshaped(&moved, shape))
}

/// Allocates an `n`-element output of `x`'s class and runs the NCCL call on the typed
/// buffers (skipped when nothing moves).
fn wire(
    lane: &Lane,
    comm: &Comm,
    w: Wire,
    x: &DeviceTensor,
    n: usize,
) -> Result<DeviceData, CudaError> {
    let m = x.numel();
    match &*x.data {
        DeviceData::F32(s) => Ok(DeviceData::F32(wire_typed(lane, comm, w, s, m, n)?)),
        DeviceData::I64(s) => Ok(DeviceData::I64(wire_typed(lane, comm, w, s, m, n)?)),
        DeviceData::Bool(s) => Ok(DeviceData::Bool(wire_typed(lane, comm, w, s, m, n)?)),
    }
}

fn wire_typed<T: NcclType + DeviceRepr + ValidAsZeroBits>(
    lane: &Lane,
    comm: &Comm,
    w: Wire,
    send: &CudaSlice<T>,
    m: usize,
    n: usize,
) -> Result<CudaSlice<T>, CudaError> {
    let mut recv = lane
        .stream
        .alloc_zeros::<T>(n.max(1))
        .map_err(CudaError::driver)?;
    if m == 0 || n == 0 {
        return Ok(recv);
    }
    let src = send.slice(0..m);
    let res = match w {
        Wire::AllReduce => comm
            .all_reduce(&src, &mut recv.slice_mut(0..n), &ReduceOp::Sum)
            .map(|_| ()),
        Wire::Broadcast(root) => comm
            .broadcast(Some(&src), &mut recv.slice_mut(0..n), root)
            .map(|_| ()),
        Wire::AllGather => comm.all_gather(&src, &mut recv.slice_mut(0..n)).map(|_| ()),
        Wire::ReduceScatter => comm
            .reduce_scatter(&src, &mut recv.slice_mut(0..n), &ReduceOp::Sum)
            .map(|_| ()),
        Wire::Exchange(chunk) => exchange(comm, send, &mut recv, chunk),
    };
    res.map_err(CudaError::nccl)?;
    Ok(recv)
}

/// Grouped send/recv: chunk r of `send` goes to rank r; chunk r of `recv` comes from r.
fn exchange<T: NcclType>(
    comm: &Comm,
    send: &CudaSlice<T>,
    recv: &mut CudaSlice<T>,
    chunk: usize,
) -> Result<(), cudarc::nccl::result::NcclError> {
    let world = comm.world_size();
    let sends: Vec<_> = (0..world)
        .map(|r| send.slice(r * chunk..(r + 1) * chunk))
        .collect();
    let recvs: Vec<_> = recv
        .slice_mut(0..world * chunk)
        .chunks_exact_mut(chunk)
        .collect();
    let mut group = comm.group();
    for (r, (s, d)) in sends.into_iter().zip(recvs).enumerate() {
        group.send(s, r as i32)?;
        group.recv(d, r as i32)?;
    }
    drop(group);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_split_and_merge_shapes() {
        assert_eq!(
            split_axis_shape(&[2, 8, 3], 1, 4).unwrap(),
            vec![2, 4, 2, 3]
        );
        assert!(split_axis_shape(&[2, 6], 1, 4).is_err());
        assert_eq!(merge_axis_shape(&[2, 4, 2, 3], 1), vec![2, 8, 3]);
        assert_eq!(merge_axis_shape(&[5], 0), vec![5]);
    }

    /// Host model of the all-gather and reduce-scatter layout moves, on integers.
    #[test]
    fn layout_moves_reproduce_concat_and_chunking() {
        use crate::cuda::meta::{apply_strided, StridedMeta};
        let world = 2;
        // Two ranks hold [2, 3] pieces of a [2, 6] tensor split on axis 1.
        let pieces: Vec<Vec<i32>> = (0..world)
            .map(|r| (0..6).map(|i| 100 * r as i32 + i).collect())
            .collect();
        let stacked: Vec<i32> = pieces.concat(); // NCCL all-gather: [world, 2, 3]
                                                 // move axis 0 to 1: [2, world, 3], then merge -> [2, 6]
        let perm = [1, 0, 2];
        let mut out = vec![0; 12];
        apply_strided(
            &StridedMeta::permute(&[world, 2, 3], &perm).unwrap(),
            &stacked,
            &mut out,
        );
        let want: Vec<i32> = (0..2)
            .flat_map(|row| {
                (0..world).flat_map(move |r| (0..3).map(move |c| 100 * r as i32 + row * 3 + c))
            })
            .collect();
        assert_eq!(out, want);
        // Reduce-scatter prep: full [2, 6] viewed as [2, world, 3], world axis to front
        // gives contiguous per-rank chunks [world, 2, 3].
        let full: Vec<i32> = (0..12).collect();
        let mut front = vec![0; 12];
        apply_strided(
            &StridedMeta::permute(&[2, world, 3], &[1, 0, 2]).unwrap(),
            &full,
            &mut front,
        );
        assert_eq!(&front[..6], &[0, 1, 2, 6, 7, 8]);
        assert_eq!(&front[6..], &[3, 4, 5, 9, 10, 11]);
    }
}
