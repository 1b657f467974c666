//! Virtual ranks: N ranks of a plan as N streams of one GPU, for testing partitioned
//! plans on a single-GPU machine (NCCL refuses two ranks on one device).
//!
//! Every rank runs on its own [`Lane`] up to its next collective; the collective is then
//! done in device memory with the copy and add kernels, in a fixed order (all-reduce sums
//! rank 0 + rank 1 + ... left to right), and its results handed back to each rank.
use super::buffer::DeviceTensor;
use super::collectives::CollectiveCall;
use super::context::{Gpu, Lane};
use super::ops;
use super::program::RankRun;
use super::weights::WeightSource;
use super::CudaError;
use std::collections::BTreeMap;
use tessera_ir::plan::{CollectiveKind, Plan, StepKind};
use tessera_ir::Tensor;

/// N virtual ranks on one device.
pub struct VirtualRanks {
    lanes: Vec<Lane>,
}

impl VirtualRanks {
    /// Opens `device` and creates one lane per rank.
    pub fn new(device: usize, world: usize) -> Result<VirtualRanks, CudaError> {
        if world == 0 {
            return Err(CudaError::Plan("virtual ranks: world size 0".into()));
        }
        let gpu = Gpu::open(device)?;
        let lanes = (0..world).map(|_| gpu.lane()).collect::<Result<_, _>>()?;
        Ok(VirtualRanks { lanes })
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.lanes.len()
    }

    /// Runs every rank's program; returns each rank's outputs, by rank.
    pub fn run(
        &self,
        plan: &Plan,
        weights: &dyn WeightSource,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<Vec<Tensor>>, CudaError> {
        let world = self.world();
        let mut runs: Vec<RankRun> = (0..world)
            .map(|r| RankRun::new(plan, r, world))
            .collect::<Result<_, _>>()?;
        loop {
            let mut pending = Vec::with_capacity(world);
            for (run, lane) in runs.iter_mut().zip(&self.lanes) {
                pending.push(run.run_until_collective(lane, weights, inputs)?);
            }
            if pending.iter().all(|p| p.is_none()) {
                break;
            }
            let mut calls = Vec::with_capacity(world);
            for (r, p) in pending.iter().enumerate() {
                let Some(step) = p else {
                    return Err(CudaError::Plan(format!(
                        "rank {r} finished while other ranks wait in a collective"
                    )));
                };
                let StepKind::Collective {
                    collective,
                    axis,
                    to_axis,
                    group,
                    ..
                } = &step.kind
                else {
                    return Err(CudaError::Plan("expected a collective step".into()));
                };
                let input = *step
                    .inputs
                    .first()
                    .ok_or_else(|| CudaError::Plan("collective without input".into()))?;
                calls.push((
                    CollectiveCall {
                        kind: *collective,
                        axis: *axis,
                        to_axis: *to_axis,
                        group: group.clone(),
                    },
                    input,
                ));
            }
            if let Some((r, _)) = calls.iter().enumerate().find(|(_, c)| c.0 != calls[0].0) {
                return Err(CudaError::Plan(format!(
                    "ranks disagree on the next collective: rank 0 {:?}, rank {r} {:?}",
                    calls[0].0, calls[r].0
                )));
            }
            let xs: Vec<DeviceTensor> = calls
                .iter()
                .zip(&runs)
                .map(|((_, v), run)| run.value(*v).cloned())
                .collect::<Result<_, _>>()?;
            for lane in &self.lanes {
                lane.synchronize()?;
            }
            let outs = virtual_collective(&self.lanes[0], &calls[0].0, &xs)
                .map_err(|e| runs[0].collective_err(e))?;
            self.lanes[0].synchronize()?;
            for (run, out) in runs.iter_mut().zip(outs) {
                run.finish_collective(out)?;
            }
        }
        runs.iter()
            .zip(&self.lanes)
            .map(|(run, lane)| run.outputs(lane))
            .collect()
    }
}

/// Sums the tensors left to right (rank order).
fn ordered_sum(lane: &Lane, xs: &[DeviceTensor]) -> Result<DeviceTensor, CudaError> {
    let mut acc = xs
        .first()
        .cloned()
        .ok_or_else(|| CudaError::Plan("collective over no ranks".into()))?;
    for x in &xs[1..] {
        acc = ops::add_same_shape(lane, &acc, x)?;
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
    ops::local_slice(lane, x, axis, r * c, (r + 1) * c)
}

/// The results of a collective for every rank, computed in device memory on `lane`.
pub fn virtual_collective(
    lane: &Lane,
    call: &CollectiveCall,
    xs: &[DeviceTensor],
) -> Result<Vec<DeviceTensor>, CudaError> {
    let world = xs.len();
    if call.group.len() != world || call.group.iter().enumerate().any(|(i, r)| i != *r) {
        return Err(CudaError::Unsupported(format!(
            "collective over group {:?}; only the full group 0..{world} is supported",
            call.group
        )));
    }
    match call.kind {
        CollectiveKind::AllReduce => {
            let sum = ordered_sum(lane, xs)?;
            Ok(vec![sum; world])
        }
        CollectiveKind::Broadcast => Ok(vec![xs[call.group[0]].clone(); world]),
        CollectiveKind::AllGather => {
            let refs: Vec<&DeviceTensor> = xs.iter().collect();
            let all = ops::concat(lane, &refs, call.need_axis()?)?;
            Ok(vec![all; world])
        }
        CollectiveKind::ReduceScatter => {
            let sum = ordered_sum(lane, xs)?;
            let axis = call.need_axis()?;
            (0..world)
                .map(|r| chunk(lane, &sum, axis, r, world))
                .collect()
        }
        CollectiveKind::AllToAll => {
            let (axis, to_axis) = (call.need_axis()?, call.need_to_axis()?);
            (0..world)
                .map(|r| {
                    let parts: Vec<DeviceTensor> = xs
                        .iter()
                        .map(|x| chunk(lane, x, to_axis, r, world))
                        .collect::<Result<_, _>>()?;
                    let refs: Vec<&DeviceTensor> = parts.iter().collect();
                    ops::concat(lane, &refs, axis)
                })
                .collect()
        }
    }
}
