//! Running one rank's program of a plan on a [`Lane`], up to each collective.
//!
//! [`RankRun`] executes every non-collective step (weights, inputs, local ops, local
//! slices, scaling, sharded gathers) with device buffers and stops at each collective,
//! which the caller performs (NCCL in [`super::executor`], device-memory sums across
//! streams in [`super::virtual_ranks`]) and hands back with [`RankRun::finish_collective`].
//! Buffers are dropped after their last use, as in the CPU executor.
use super::buffer::DeviceTensor;
use super::context::Lane;
use super::ops::{self, OutSpec};
use super::weights::{host_slice, WeightSource};
use super::CudaError;
use std::collections::{BTreeMap, HashSet};
use tessera_ir::plan::{Plan, RankProgram, Step, StepKind, ValueId};
use tessera_ir::Tensor;

/// The state of one rank while its program runs.
pub struct RankRun<'p> {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    plan: &'p Plan,
    program: &'p RankProgram,
    values: Vec<Option<DeviceTensor>>,
    last_use: Vec<Option<usize>>,
    keep: HashSet<ValueId>,
    pc: usize,
}

/// A short description of a step for error messages.
pub fn describe(plan: &Plan, step: &Step) -> String {
    match &step.kind {
        StepKind::Compute { node, op } => {
            let name = plan
                .graph
                .nodes
                .get(node.index())
                .map(|n| n.name.as_str())
                .unwrap_or("?");
            format!("{} '{name}'", op.name())
        }
        StepKind::LoadWeight { tensor, .. } => {
            format!("load weight '{}'", tensor_name(plan, tensor.index()))
        }
        StepKind::Input { tensor, .. } => format!("input '{}'", tensor_name(plan, tensor.index())),
        StepKind::ShardedGather { .. } => "sharded gather".into(),
        StepKind::LocalSlice { .. } => "local slice".into(),
        StepKind::ScaleToPartial { .. } => "scale to partial".into(),
        StepKind::Collective { collective, .. } => collective.as_str().into(),
    }
}

fn tensor_name(plan: &Plan, t: usize) -> &str {
    plan.graph
        .tensors
        .get(t)
        .map(|i| i.name.as_str())
        .unwrap_or("?")
}

impl<'p> RankRun<'p> {
    /// Prepares rank `rank` of `plan` (checks the rank count).
    pub fn new(plan: &'p Plan, rank: usize, world: usize) -> Result<RankRun<'p>, CudaError> {
        if plan.ranks.len() != world {
            return Err(CudaError::Plan(format!(
                "plan has {} ranks but {world} were started",
                plan.ranks.len()
            )));
        }
        let program = plan
            .ranks
            .iter()
            .find(|p| p.rank == rank)
            .ok_or_else(|| CudaError::Plan(format!("plan has no program for rank {rank}")))?;
        let mut last_use = vec![None; plan.values.len()];
        for (i, s) in program.steps.iter().enumerate() {
            for v in &s.inputs {
                let slot = last_use.get_mut(v.index()).ok_or_else(|| {
                    CudaError::Plan(format!(
                        "step {i} of rank {rank} reads unknown value {}",
                        v.0
                    ))
                })?;
                *slot = Some(i);
            }
        }
        Ok(RankRun {
            rank,
            world,
            plan,
            program,
            values: vec![None; plan.values.len()],
            last_use,
            keep: plan.outputs.iter().copied().collect(),
            pc: 0,
        })
    }

    fn step_err(&self, step: &Step, e: CudaError) -> CudaError {
        CudaError::Step {
            rank: self.rank,
            step: self.pc,
            what: describe(self.plan, step),
            msg: e.to_string(),
        }
    }

    /// The value `v` (it must have been produced and not freed).
    pub fn value(&self, v: ValueId) -> Result<&DeviceTensor, CudaError> {
        self.values
            .get(v.index())
            .and_then(|x| x.as_ref())
            .ok_or_else(|| {
                CudaError::Plan(format!(
                    "rank {}: value {} used before it is computed",
                    self.rank, v.0
                ))
            })
    }

    /// The (dtype, shape) the plan gives value `v`.
    pub fn spec(&self, v: ValueId) -> Result<OutSpec, CudaError> {
        let pv = self
            .plan
            .values
            .get(v.index())
            .ok_or_else(|| CudaError::Plan(format!("unknown value {}", v.0)))?;
        Ok((pv.dtype, pv.shape.clone()))
    }

    /// Runs steps until the next collective (returned, with its index, unexecuted) or the
    /// end of the program (`None`).
    pub fn run_until_collective(
        &mut self,
        lane: &Lane,
        weights: &dyn WeightSource,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Option<&'p Step>, CudaError> {
        while let Some(step) = self.program.steps.get(self.pc) {
            if matches!(step.kind, StepKind::Collective { .. }) {
                return Ok(Some(step));
            }
            let outs = self
                .execute(lane, step, weights, inputs)
                .map_err(|e| self.step_err(step, e))?;
            self.store(step, outs).map_err(|e| self.step_err(step, e))?;
        }
        Ok(None)
    }

    /// Stores the result of the collective the run stopped at and moves past it.
    pub fn finish_collective(&mut self, out: DeviceTensor) -> Result<(), CudaError> {
        let step = self
            .program
            .steps
            .get(self.pc)
            .ok_or_else(|| CudaError::Plan("no pending collective".into()))?;
        self.store(step, vec![out])
            .map_err(|e| self.step_err(step, e))
    }

    /// Wraps an error of the pending collective with the step context.
    pub fn collective_err(&self, e: CudaError) -> CudaError {
        match self.program.steps.get(self.pc) {
            Some(step) => self.step_err(step, e),
            None => e,
        }
    }

    fn store(&mut self, step: &Step, outs: Vec<DeviceTensor>) -> Result<(), CudaError> {
        if outs.len() != step.outputs.len() {
            return Err(CudaError::Plan(format!(
                "{} outputs for {} output values",
                outs.len(),
                step.outputs.len()
            )));
        }
        for (v, t) in step.outputs.iter().zip(outs) {
            let (dtype, shape) = self.spec(*v)?;
            if t.shape != shape {
                return Err(CudaError::Plan(format!(
                    "value {} has shape {:?}, the plan says {dtype} {shape:?}",
                    v.0, t.shape
                )));
            }
            self.values[v.index()] = Some(t);
        }
        for v in &step.inputs {
            if self.last_use[v.index()] == Some(self.pc) && !self.keep.contains(v) {
                self.values[v.index()] = None;
            }
        }
        self.pc += 1;
        Ok(())
    }

    fn execute(
        &self,
        lane: &Lane,
        step: &Step,
        weights: &dyn WeightSource,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<DeviceTensor>, CudaError> {
        let ins: Vec<&DeviceTensor> = step
            .inputs
            .iter()
            .map(|v| self.value(*v))
            .collect::<Result<_, _>>()?;
        let one = |t: DeviceTensor| Ok(vec![t]);
        match &step.kind {
            StepKind::LoadWeight { tensor, slice } => {
                let w = self.plan.graph.weights.get(tensor).ok_or_else(|| {
                    CudaError::Plan(format!("tensor {} is not a weight", tensor.0))
                })?;
                one(DeviceTensor::upload(
                    lane,
                    &weights.load_weight(w, slice.as_ref())?,
                )?)
            }
            StepKind::Input { tensor, slice } => {
                let name = tensor_name(self.plan, tensor.index());
                let t = inputs
                    .get(name)
                    .ok_or_else(|| CudaError::Plan(format!("missing input '{name}'")))?;
                let t = match slice {
                    Some(s) => host_slice(t, s)?,
                    None => t.clone(),
                };
                one(DeviceTensor::upload(lane, &t)?)
            }
            StepKind::Compute { op, .. } => {
                let outs: Vec<OutSpec> = step
                    .outputs
                    .iter()
                    .map(|v| self.spec(*v))
                    .collect::<Result<_, _>>()?;
                ops::run_op(lane, op, &ins, &outs)
            }
            StepKind::ShardedGather { offset, rows, .. } => {
                let [table, idx] = ins[..] else {
                    return Err(CudaError::Plan(
                        "sharded gather needs table and indices".into(),
                    ));
                };
                let full = self
                    .plan
                    .values
                    .get(step.inputs[0].index())
                    .and_then(|pv| self.plan.graph.tensors.get(pv.tensor.index()))
                    .and_then(|t| t.shape.first().copied())
                    .ok_or_else(|| CudaError::Plan("sharded gather: unknown table".into()))?;
                one(ops::sharded_gather(lane, table, idx, *offset, *rows, full)?)
            }
            StepKind::LocalSlice { slice } => {
                let x = ins
                    .first()
                    .ok_or_else(|| CudaError::Plan("local slice without input".into()))?;
                one(ops::local_slice(
                    lane,
                    x,
                    slice.axis,
                    slice.start,
                    slice.end,
                )?)
            }
            StepKind::ScaleToPartial { n } => {
                let x = ins
                    .first()
                    .ok_or_else(|| CudaError::Plan("scale without input".into()))?;
                one(ops::scale(lane, x, 1.0 / (*n as f32))?)
            }
            StepKind::Collective { .. } => Err(CudaError::Plan(
                "collective reached the local executor".into(),
            )),
        }
    }

    /// Downloads the plan outputs (after the program ran to the end).
    pub fn outputs(&self, lane: &Lane) -> Result<Vec<Tensor>, CudaError> {
        lane.synchronize()?;
        self.plan
            .outputs
            .iter()
            .map(|v| self.value(*v)?.download(lane))
            .collect()
    }
}
