//! Virtual ranks: N ranks of a plan as N lanes (streams) of one GPU, for running partitioned
//! plans on a single-GPU machine (NCCL refuses two ranks on one device).
//!
//! Each group of ranks has its own exchange ([`LaneGroups`]): on a `[D, T]` mesh every data
//! group's collectives meet among its T lanes only, as the CPU devices' do.
//!
//! Each rank thread owns its lane. A collective meets in a [`LaneExchange`]
//! ([`lane_collective`]): every member first waits for its own lane (so its input is
//! complete), deposits its input and waits; the last member to arrive computes every
//! member's output in device memory on its own lane with the copy and add kernels, in a fixed
//! order (all-reduce sums rank 0 + rank 1 + ... left to right), waits for that lane, and
//! publishes the outputs.
//!
//! Buffer lifetime across streams: every buffer handed from one lane to another is complete
//! (its producer's lane was synchronized) before the other lane sees it, and cudarc's event
//! tracking (on by default once a context has several streams) makes a buffer's drop wait,
//! on its owning stream, for the last read recorded on it before freeing it. A buffer keeps
//! only its *last* read event, so a result shared by several ranks would be unsafe with 3
//! or more ranks: rank 1's drop would wait only for (say) rank 2's last read while rank 3's
//! stream may still read memory returned to the pool. Hence no output is shared: replicated
//! results (all-reduce, all-gather, broadcast) are copied once per rank, so after the round
//! each output is read by one rank's lane only, and [`lane_collective`] checks that no
//! output's storage is held anywhere else. The inputs are read by the last member's lane,
//! which is synchronized before anyone continues, so no read of them is pending either.
//! `tests/cuda_gpu_ranks.rs` exercises this at 3, 4 and 8 ranks (GPU only).
use super::buffer::DeviceTensor;
use super::collectives::{need_axis, need_to_axis};
use super::context::Lane;
use super::exchange::{Exchange, ExchangeGroups};
use super::meta::StridedMeta;
use super::ops;
use super::CudaError;
use crate::collectives::CollectiveSpec;
use crate::device::DeviceError;
use tessera_ir::plan::CollectiveKind;

/// The meeting point of one group's collectives among virtual ranks.
pub type LaneExchange = Exchange<DeviceTensor>;

/// The meeting points of a run's virtual ranks, one [`LaneExchange`] per group of ranks
/// (the whole world on a 1-D mesh; each data group's ranks on a `[D, T]` mesh).
pub type LaneGroups = ExchangeGroups<DeviceTensor>;

/// Runs `spec` over `group` for `rank`, whose input `x` lives on `lane`; blocks until every
/// member of `group` called it on `ex` (the group's exchange, of `group.len()` members)
/// and returns this rank's output.
pub fn lane_collective(
    ex: &LaneExchange,
    rank: usize,
    lane: &Lane,
    group: &[usize],
    spec: &CollectiveSpec,
    x: &DeviceTensor,
) -> Result<DeviceTensor, DeviceError> {
    let member = group.iter().position(|&m| m == rank).ok_or_else(|| {
        DeviceError::Backend(format!("rank {rank} is not in the group {group:?}"))
    })?;
    if group.len() != ex.world() {
        return Err(DeviceError::Backend(format!(
            "collective over {group:?} met in an exchange of {} ranks",
            ex.world()
        )));
    }
    // The input must be complete before another lane reads it.
    lane.synchronize()?;
    let out = ex.meet(member, spec, x.clone(), |xs| {
        let run = || -> Result<Vec<DeviceTensor>, CudaError> {
            let outs = virtual_collective(lane, group, spec, &xs)?;
            // The outputs must be complete before other lanes read them (and the inputs'
            // reads done before their owners free them).
            lane.synchronize()?;
            Ok(outs)
        };
        run().map_err(|e| e.to_string())
    })?;
    // The ownership rule of the module notes: this rank's output is its own buffer.
    if std::sync::Arc::strong_count(&out.data) != 1 {
        return Err(DeviceError::Backend(format!(
            "rank {rank}: the {} result shares its device buffer with another rank",
            spec.kind.as_str()
        )));
    }
    Ok(out)
}

/// Sums the tensors left to right (rank order).
fn ordered_sum(lane: &Lane, xs: &[DeviceTensor]) -> Result<DeviceTensor, CudaError> {
    let mut acc = xs
        .first()
        .cloned()
        .ok_or_else(|| CudaError::Plan("collective over no ranks".into()))?;
    for x in &xs[1..] {
        acc = ops::elementwise::add_same_shape(lane, &acc, x)?;
    }
    Ok(acc)
}

/// Chunk `r` of `world` along `axis`.
fn chunk(
    lane: &Lane,
    x: &DeviceTensor,
    axis: usize,
    r: usize,
    world: usize,
) -> Result<DeviceTensor, CudaError> {
    let e = *x
        .shape
        .get(axis)
        .ok_or_else(|| CudaError::Plan(format!("axis {axis} out of range for {:?}", x.shape)))?;
    if e % world != 0 {
        return Err(CudaError::Plan(format!(
            "axis {axis} of {:?} does not split into {world} parts",
            x.shape
        )));
    }
    let c = e / world;
    ops::movement::take_range(lane, x, axis, r * c, (r + 1) * c)
}

/// `world` copies of `x`, one per rank (see the module notes on buffer lifetime).
fn replicate(lane: &Lane, x: &DeviceTensor, world: usize) -> Result<Vec<DeviceTensor>, CudaError> {
    let identity: Vec<usize> = (0..x.shape.len()).collect();
    let meta = StridedMeta::permute(&x.shape, &identity)?;
    (0..world)
        .map(|_| ops::copy_to_new(lane, x, &meta, x.shape.clone()))
        .collect()
}

/// The outputs of a collective for every member of `group` (`xs`: every member's input, in
/// member order), computed in device memory on `lane`.
pub fn virtual_collective(
    lane: &Lane,
    group: &[usize],
    spec: &CollectiveSpec,
    xs: &[DeviceTensor],
) -> Result<Vec<DeviceTensor>, CudaError> {
    let world = xs.len();
    if group.len() != world || world == 0 {
        return Err(CudaError::Plan(format!(
            "collective over {group:?} with {world} inputs"
        )));
    }
    match spec.kind {
        CollectiveKind::AllReduce => replicate(lane, &ordered_sum(lane, xs)?, world),
        CollectiveKind::Broadcast => replicate(lane, &xs[0], world),
        CollectiveKind::AllGather => {
            let refs: Vec<&DeviceTensor> = xs.iter().collect();
            let all = ops::movement::concat(lane, &refs, need_axis(spec)?)?;
            replicate(lane, &all, world)
        }
        CollectiveKind::ReduceScatter => {
            let sum = ordered_sum(lane, xs)?;
            let axis = need_axis(spec)?;
            (0..world)
                .map(|r| chunk(lane, &sum, axis, r, world))
                .collect()
        }
        CollectiveKind::AllToAll => {
            let (axis, to_axis) = (need_axis(spec)?, need_to_axis(spec)?);
            (0..world)
                .map(|r| {
                    let parts: Vec<DeviceTensor> = xs
                        .iter()
                        .map(|x| chunk(lane, x, to_axis, r, world))
                        .collect::<Result<_, _>>()?;
                    let refs: Vec<&DeviceTensor> = parts.iter().collect();
                    ops::movement::concat(lane, &refs, axis)
                })
                .collect()
        }
    }
}
