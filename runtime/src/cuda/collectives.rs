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
//! * broadcast from the group's first rank;
//! * a ragged split (per-member `counts`): all-gather and reduce-scatter pad every member's
//!   piece to the largest count, move equal pieces, and cut the padding off (all-to-all of a
//!   ragged split is refused with an error).
//!
//! A group that spans all ranks uses the world's communicator; any other group (a data
//! group of a `[D, T]` mesh) uses its own sub-communicator ([`NcclComm::group_comm`],
//! `ncclCommSplit`), in which the group's members are ranks `0..group.len()`.
//!
//! Every NCCL call is followed by a bounded wait ([`super::watchdog::wait_for`]): an event
//! recorded after it is polled together with the communicator's asynchronous error, and
//! past [`NcclTimeouts::collective`] the communicator is aborted and the collective fails
//! with an error naming the rank and the collective.
use super::buffer::{DeviceData, DeviceTensor};
use super::comm::{NcclComm, NcclTimeouts};
use super::context::Lane;
use super::nccl::{Comm, NcclType};
use super::ops;
use super::watchdog::{wait_for, Deadman, Pending};
use super::CudaError;
use crate::collectives::CollectiveSpec;
use cudarc::driver::{CudaEvent, CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};
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

/// Refuses any group but the full one, `0..world` in order (a single-rank device's check).
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

/// Performs `spec` over `group` on this rank's `x` through `nc` (on `lane`'s stream).
pub fn nccl_collective(
    lane: &Lane,
    nc: &mut NcclComm,
    group: &[usize],
    spec: &CollectiveSpec,
    x: &DeviceTensor,
) -> Result<DeviceTensor, CudaError> {
    let timeouts = nc.timeouts;
    // The world's communicator, or the group's own (a data group of a `[D, T]` mesh).
    nc.group_comm(group)?;
    let NcclComm {
        comm: world_comm,
        deadman,
        subgroups,
        ..
    } = nc;
    let deadman = &*deadman;
    let comm = match subgroups.iter_mut().find(|(g, _)| g == group) {
        Some((_, c)) => c,
        None => world_comm,
    };
    let world = comm.world_size();
    if !spec.counts.is_empty() {
        let axis = need_axis(spec)?;
        if spec.counts.len() != world {
            return Err(CudaError::Plan(format!(
                "{} with {} per-member counts in a group of {world}",
                spec.kind.as_str(),
                spec.counts.len()
            )));
        }
        let me = comm.rank();
        return match spec.kind {
            CollectiveKind::AllGather => {
                ragged_all_gather(lane, (comm, deadman), timeouts, spec, x, axis, me)
            }
            CollectiveKind::ReduceScatter => {
                ragged_reduce_scatter(lane, (comm, deadman), timeouts, spec, x, axis, me)
            }
            _ => Err(CudaError::Plan(format!(
                "{} of a ragged split ({:?} per rank) is not supported on the CUDA backend \
                 yet; compile for a device count that divides the split axes, or run on CPU \
                 devices",
                spec.kind.as_str(),
                spec.counts
            ))),
        };
    }
    match spec.kind {
        CollectiveKind::AllReduce => {
            let out = wire(
                lane,
                (comm, deadman),
                timeouts,
                spec,
                Wire::AllReduce,
                x,
                x.numel(),
            )?;
            Ok(DeviceTensor::new(x.dtype, x.shape.clone(), out))
        }
        CollectiveKind::Broadcast => {
            let out = wire(
                lane,
                (comm, deadman),
                timeouts,
                spec,
                // From member 0 of the group (rank 0 of its communicator).
                Wire::Broadcast(0),
                x,
                x.numel(),
            )?;
            Ok(DeviceTensor::new(x.dtype, x.shape.clone(), out))
        }
        CollectiveKind::AllGather => {
            let axis = need_axis(spec)?;
            let out = wire(
                lane,
                (comm, deadman),
                timeouts,
                spec,
                Wire::AllGather,
                x,
                x.numel() * world,
            )?;
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
            let out = wire(
                lane,
                (comm, deadman),
                timeouts,
                spec,
                Wire::ReduceScatter,
                &front,
                x.numel() / world,
            )?;
            Ok(DeviceTensor::new(x.dtype, local, out))
        }
        CollectiveKind::AllToAll => {
            let (axis, to_axis) = (need_axis(spec)?, need_to_axis(spec)?);
            let viewed = reshaped(x, split_axis_shape(&x.shape, to_axis, world)?);
            let front = ops::movement::move_axis(lane, &viewed, to_axis, 0)?;
            let out = wire(
                lane,
                (comm, deadman),
                timeouts,
                spec,
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

/// `x` padded with zeros along `axis` to `len` elements.
fn pad_to(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    len: usize,
) -> Result<DeviceTensor, CudaError> {
    let have = x.shape.get(axis).copied().unwrap_or(0);
    if have >= len {
        return Ok(reshaped(x, x.shape.clone()));
    }
    let mut pad = x.shape.clone();
    pad[axis] = len - have;
    let zeros = DeviceTensor::zeros(lane, x.dtype, pad)?;
    ops::movement::concat(lane, &[x, &zeros], axis)
}

/// All-gather of a ragged split (member r holds `spec.counts[r]` elements of `axis`): every
/// member pads its piece to the largest count, NCCL gathers the equal pieces, and the
/// padding is cut out of the concatenation.
fn ragged_all_gather(
    lane: &Lane,
    (comm, deadman): (&mut Comm, &Deadman),
    timeouts: NcclTimeouts,
    spec: &CollectiveSpec,
    x: &DeviceTensor,
    axis: usize,
    me: usize,
) -> Result<DeviceTensor, CudaError> {
    let counts = &spec.counts;
    let (world, max) = (counts.len(), counts.iter().copied().max().unwrap_or(0));
    if x.shape.get(axis) != counts.get(me) {
        return Err(CudaError::Plan(format!(
            "all_gather: member {me} holds {:?} but the plan says {:?} elements of axis {axis}",
            x.shape,
            counts.get(me)
        )));
    }
    let padded = pad_to(lane, x, axis, max)?;
    let out = wire(
        lane,
        (comm, deadman),
        timeouts,
        spec,
        Wire::AllGather,
        &padded,
        padded.numel() * world,
    )?;
    let mut stacked = vec![world];
    stacked.extend_from_slice(&padded.shape);
    let full = unstack(lane, DeviceTensor::new(x.dtype, stacked, out), axis)?;
    let pieces = counts
        .iter()
        .enumerate()
        .map(|(r, &c)| ops::movement::take_range(lane, &full, axis, r * max, r * max + c))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&DeviceTensor> = pieces.iter().collect();
    ops::movement::concat(lane, &refs, axis)
}

/// Reduce-scatter to a ragged split: the input is cut into the members' ranges, each padded
/// to the largest count, NCCL reduce-scatters the equal chunks, and each member cuts its
/// padding off.
fn ragged_reduce_scatter(
    lane: &Lane,
    (comm, deadman): (&mut Comm, &Deadman),
    timeouts: NcclTimeouts,
    spec: &CollectiveSpec,
    x: &DeviceTensor,
    axis: usize,
    me: usize,
) -> Result<DeviceTensor, CudaError> {
    let counts = &spec.counts;
    let (world, max) = (counts.len(), counts.iter().copied().max().unwrap_or(0));
    if x.shape.get(axis) != Some(&counts.iter().sum()) || me >= world {
        return Err(CudaError::Plan(format!(
            "reduce_scatter of {:?} into {counts:?} along axis {axis}",
            x.shape
        )));
    }
    let mut start = 0;
    let mut chunks = Vec::with_capacity(world);
    for &c in counts {
        let piece = ops::movement::take_range(lane, x, axis, start, start + c)?;
        chunks.push(pad_to(lane, &piece, axis, max)?);
        start += c;
    }
    let refs: Vec<&DeviceTensor> = chunks.iter().collect();
    let even = ops::movement::concat(lane, &refs, axis)?;
    let viewed = reshaped(&even, split_axis_shape(&even.shape, axis, world)?);
    let front = ops::movement::move_axis(lane, &viewed, axis, 0)?;
    let mut local = even.shape.clone();
    local[axis] = max;
    let out = wire(
        lane,
        (comm, deadman),
        timeouts,
        spec,
        Wire::ReduceScatter,
        &front,
        even.numel() / world,
    )?;
    let mine = DeviceTensor::new(x.dtype, local, out);
    ops::movement::take_range(lane, &mine, axis, 0, counts[me])
}

/// `[world, ...local]` → concatenation of the pieces along `axis` of `local`.
fn unstack(lane: &Lane, stacked: DeviceTensor, axis: usize) -> Result<DeviceTensor, CudaError> {
    let moved = ops::movement::move_axis(lane, &stacked, 0, axis)?;
    let shape = merge_axis_shape(&moved.shape, axis);
    Ok(reshaped(&moved, shape))
}

/// Allocates an `n`-element output of `x`'s class, runs the NCCL call on the buffers
/// (skipped when nothing moves) and waits for it within the collective timeout.
#[allow(clippy::too_many_arguments)]
fn wire(
    lane: &Lane,
    (comm, deadman): (&mut Comm, &Deadman),
    timeouts: NcclTimeouts,
    spec: &CollectiveSpec,
    w: Wire,
    x: &DeviceTensor,
    n: usize,
) -> Result<DeviceData, CudaError> {
    let m = x.numel();
    // Enqueueing may block inside NCCL (a group end waiting for a peer's connection), where
    // no poll can run: the deadman ends the process if it does not return.
    let armed = deadman.arm(
        &format!("enqueueing {} (TESSERA_NCCL_TIMEOUT_S)", spec.kind.as_str()),
        timeouts.collective,
    );
    let out = match &*x.data {
        DeviceData::F32(s) => DeviceData::F32(wire_typed(lane, comm, w, s, NcclType::F32, m, n)?),
        DeviceData::I64(s) => DeviceData::I64(wire_typed(lane, comm, w, s, NcclType::I64, m, n)?),
        DeviceData::Bool(s) => DeviceData::Bool(wire_typed(lane, comm, w, s, NcclType::U8, m, n)?),
    };
    drop(armed);
    if m > 0 && n > 0 {
        let no_timing = cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
        let event = lane
            .stream
            .record_event(Some(no_timing))
            .map_err(CudaError::driver)?;
        let mut pending = Enqueued { event, comm };
        wait_for(
            pending.comm.rank(),
            spec.kind.as_str(),
            timeouts.collective,
            &mut pending,
        )?;
    }
    Ok(out)
}

/// An enqueued NCCL call: complete when the event recorded after it is.
struct Enqueued<'a> {
    event: CudaEvent,
    comm: &'a mut Comm,
}

impl Pending for Enqueued<'_> {
    fn poll(&mut self) -> Result<bool, String> {
        self.event.try_is_complete().map_err(|e| e.to_string())
    }
    fn async_error(&mut self) -> Option<String> {
        self.comm.async_error()
    }
    fn abort(&mut self) {
        self.comm.abort();
    }
}

fn wire_typed<T: DeviceRepr + ValidAsZeroBits>(
    lane: &Lane,
    comm: &mut Comm,
    w: Wire,
    send: &CudaSlice<T>,
    ty: NcclType,
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
    let stream = &lane.stream;
    let raw = stream.cu_stream() as *mut std::ffi::c_void;
    // The guards record cudarc's read/write events on this stream when they drop (after the
    // call is enqueued), so the buffers' frees wait for NCCL.
    let (src, _read) = send.device_ptr(stream);
    let (dst, _write) = recv.device_ptr_mut(stream);
    // SAFETY: `send` holds at least `m` elements and `recv` `n` (allocated above); per call:
    // all-reduce/broadcast move m = n elements, all-gather m per rank into n = m·world,
    // reduce-scatter n = m/world per rank, all-to-all world chunks of `chunk` elements with
    // chunk·world = m = n. Both buffers outlive the stream's work (their frees are ordered
    // after it by the events above, and the caller waits for completion).
    unsafe {
        match w {
            Wire::AllReduce => comm.all_reduce(src, dst, n, ty, raw),
            Wire::Broadcast(root) => comm.broadcast(src, dst, n, ty, root as usize, raw),
            Wire::AllGather => comm.all_gather(src, dst, m, ty, raw),
            Wire::ReduceScatter => comm.reduce_scatter(src, dst, n, ty, raw),
            Wire::Exchange(chunk) => {
                comm.all_to_all(src, dst, chunk, ty, std::mem::size_of::<T>(), raw)
            }
        }
    }?;
    drop((_read, _write));
    Ok(recv)
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
