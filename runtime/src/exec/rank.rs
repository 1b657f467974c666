//! One rank's interpreter: walks the rank's steps in order on its [`Device`], frees each
//! buffer after its last use and measures the bytes it holds.
use super::constants::{Constants, Role};
use super::error::ExecError;
use super::fuse::{self, Item};
use super::profile::{RunProfile, StepLabel};
use super::RankStats;
use crate::collectives::{slice_axis, CollectiveSpec};
use crate::device::{Device, DeviceError, OutSpec};
use crate::weights::WeightStore;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tessera_ir::plan::{Plan, Step, StepKind, ValueId};
use tessera_ir::Tensor;
use tessera_kernels::{FusedOp, QuantWeight};

/// What a rank needs besides its device.
pub(crate) struct RankJob<'a> {
    pub plan: &'a Plan,
    pub store: &'a WeightStore,
    pub inputs: &'a BTreeMap<String, Tensor>,
    pub rank: usize,
    /// Values this rank must download at the end (plan outputs it provides).
    pub keep: Vec<ValueId>,
    /// Set by another thread to stop the run between steps ([`ExecError::Cancelled`]).
    pub cancel: Option<&'a AtomicBool>,
}

/// A rank's program made ready to run, once per plan and rank: the steps after the fusion
/// pass, the last reader of each value, which values the rank keeps and its constant items
/// ([`super::constants`]). A resident session ([`crate::session`]) prepares it once and runs
/// it many times.
pub(crate) struct RankProgram {
    items: Vec<Item>,
    last: Vec<Option<usize>>,
    keep: Vec<bool>,
    constants: Constants,
}

impl RankProgram {
    /// Prepares rank `job.rank`'s program for a device that fuses (`fuses`) or not; with
    /// `cache_constants` its activation-independent items are computed on the first run only
    /// (for programs run many times on a device whose buffers are host tensors).
    pub fn prepare(job: &RankJob<'_>, fuses: bool, cache_constants: bool) -> RankProgram {
        let plan = job.plan;
        let steps = &plan.ranks[job.rank].steps;
        let n_values = plan.values.len();
        let mut keep = vec![false; n_values];
        for v in &job.keep {
            keep[v.index()] = true;
        }
        // The pass takes ~30 µs on MiniLM (195 steps); sessions prepare it once.
        let items = if fuses && fuse::enabled() {
            fuse::fuse(plan, steps, &keep, job.rank, Some(job.store))
        } else {
            (0..steps.len()).map(Item::Step).collect()
        };
        let last = last_uses(&items, steps, n_values);
        let constants = Constants::new(plan, job.rank, &items, &keep, cache_constants);
        RankProgram {
            items,
            last,
            keep,
            constants,
        }
    }
}

/// A rank's failure; `abort` is true when it only reports that a peer failed first.
pub(crate) struct RankFailure {
    pub err: ExecError,
    pub abort: bool,
}

/// Index of the last item reading each value (None: never read on this rank).
fn last_uses(items: &[Item], steps: &[Step], n_values: usize) -> Vec<Option<usize>> {
    let mut last = vec![None; n_values];
    for (s, item) in items.iter().enumerate() {
        for v in item_values(item, steps).0 {
            last[v.index()] = Some(s);
        }
    }
    last
}

/// The values an item reads and writes.
fn item_values<'a>(item: &'a Item, steps: &'a [Step]) -> (&'a [ValueId], &'a [ValueId]) {
    match item {
        Item::Step(s) => (&steps[*s].inputs, &steps[*s].outputs),
        Item::Fused(f) => (&f.inputs, &f.outputs),
    }
}

/// Runs rank `job.rank`'s program and returns the kept values (host copies) and statistics.
pub(crate) fn run_rank<D: Device>(
    dev: &mut D,
    job: &RankJob<'_>,
) -> Result<(Vec<(ValueId, Tensor)>, RankStats), RankFailure> {
    let program = RankProgram::prepare(job, dev.fuses(), false);
    run_prepared(dev, job, &program)
}

/// Runs a prepared rank program (see [`RankProgram::prepare`]; `job` must be the one it was
/// prepared from, up to its inputs and cancel flag).
pub(crate) fn run_prepared<D: Device>(
    dev: &mut D,
    job: &RankJob<'_>,
    program: &RankProgram,
) -> Result<(Vec<(ValueId, Tensor)>, RankStats), RankFailure> {
    let plan = job.plan;
    let rank = job.rank;
    let steps = &plan.ranks[rank].steps;
    let n_values = plan.values.len();
    let (items, last, keep) = (&program.items, &program.last, &program.keep);
    let constants = &program.constants;
    let start = Instant::now();
    let mut stats = RankStats {
        rank,
        ..RankStats::default()
    };
    let mut bufs: Vec<Option<D::Buffer>> = (0..n_values).map(|_| None).collect();
    let mut live = 0usize;
    // The prepared program's address tells this schedule from another run on the rank.
    let schedule = program as *const RankProgram as usize;
    let mut profile = RunProfile::from_env(rank, schedule, items.len());
    for (at, item) in items.iter().enumerate() {
        if job.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(RankFailure {
                err: ExecError::Cancelled,
                abort: false,
            });
        }
        let (in_ids, out_ids) = item_values(item, steps);
        let role = constants.role(at);
        if role == Role::Skip {
            // Only skipped or served constant items read its outputs: nothing to define;
            // inputs whose last reader it is are freed as it would have.
            free_dead(in_ids, at, last, keep, &mut bufs, &mut live, dev);
            count_item(item, &mut stats);
            stats.cached_steps += item_steps(item);
            continue;
        }
        // Errors name the plan step (a fused chain: its last step), described only on failure.
        let (s, what) = match item {
            Item::Step(s) => (*s, None),
            Item::Fused(f) => (f.steps.last().copied().unwrap_or(0), Some(f)),
        };
        let fail = |msg: String, abort: bool| RankFailure {
            err: ExecError::Step {
                rank,
                step: s,
                what: match what {
                    None => plan.describe_step(&steps[s]),
                    Some(f) => format!("{} of steps {:?}", f.op.name(), f.steps),
                },
                msg,
            },
            abort,
        };
        let dev_fail = |e: DeviceError| fail(e.to_string(), e.is_abort());
        let outs = {
            // Validation guarantees every input was defined earlier on this rank and freed
            // only after its last use, so these slots are full.
            let served = match (role, constants.cached(at)) {
                (Role::Serve, Some(ts)) => Some(ts),
                _ => None,
            };
            // A served item reads nothing (its inputs were skipped).
            let in_ids = if served.is_some() { &[][..] } else { in_ids };
            let ins: Vec<&D::Buffer> = in_ids
                .iter()
                .map(|v| {
                    bufs[v.index()]
                        .as_ref()
                        .ok_or_else(|| fail(format!("value {} is not live", v.0), false))
                })
                .collect::<Result<_, _>>()?;
            let t0 = profile.as_ref().map(RunProfile::start);
            let outs = match (served, item) {
                (Some(ts), _) => {
                    stats.cached_steps += item_steps(item);
                    let bufs = ts
                        .iter()
                        .map(|t| dev.upload_shared(t))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(StepError::Device);
                    if let (Ok(b), Item::Step(s)) = (&bufs, item) {
                        if matches!(steps[*s].kind, StepKind::LoadWeight { .. }) {
                            stats.weight_bytes +=
                                b.iter().map(|b| dev.bytes(b) as u64).sum::<u64>();
                        }
                    }
                    bufs
                }
                (None, Item::Step(s)) => {
                    let constant = constants.is_constant_collective(at);
                    run_step(dev, job, &steps[*s], &ins, constant, &mut stats)
                }
                (None, Item::Fused(f)) => {
                    // An integer GEMM, a direct Conv or a few-row MatMul holds its weight
                    // packed (its load step is gone).
                    match &f.op {
                        FusedOp::QuantMatMul(q) => {
                            if let QuantWeight::Packed(w) = &q.weight {
                                stats.weight_bytes += w.bytes() as u64;
                            }
                        }
                        FusedOp::ConvEpilogue { held: Some(w), .. } => {
                            stats.weight_bytes += w.bytes() as u64
                        }
                        FusedOp::MatMulEpilogue { held: Some(w), .. } => {
                            stats.weight_bytes += w.bytes() as u64
                        }
                        _ => {}
                    }
                    dev.compute_fused(&f.op, &ins).map_err(StepError::Device)
                }
            }
            .map_err(|e| match e {
                StepError::Device(d) => dev_fail(d),
                StepError::Other(m) => fail(m, false),
            })?;
            if let (Some(p), Some(t0)) = (profile.as_mut(), t0) {
                p.record(at, t0, || {
                    let kind = match item {
                        Item::Step(s) => step_key(&steps[*s].kind),
                        Item::Fused(f) => f.op.name().to_string(),
                    };
                    // Each item also names its graph node (a fused chain: its first compute
                    // step's), to pair it with another runtime's per-node profile.
                    let chain = match item {
                        Item::Step(s) => std::slice::from_ref(s),
                        Item::Fused(f) => &f.steps[..],
                    };
                    StepLabel {
                        kind,
                        node: chain
                            .iter()
                            .find_map(|&s| step_node(plan, &steps[s].kind))
                            .map(str::to_string),
                        shape: outs.first().map(|b| dev.shape(b).to_vec()),
                    }
                });
            }
            outs
        };
        // Kernels may return trailing optional outputs the plan does not bind (LayerNorm's
        // Mean and InvStdDev); they are dropped by the zip below.
        if outs.len() < out_ids.len() {
            return Err(fail(
                format!(
                    "produced {} outputs, the plan expects {}",
                    outs.len(),
                    out_ids.len()
                ),
                false,
            ));
        }
        let outs: Vec<D::Buffer> = outs.into_iter().take(out_ids.len()).collect();
        if constants.wants(at) {
            let host = outs
                .iter()
                .map(|b| dev.download_shared(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(dev_fail)?;
            constants.store(at, host);
        }
        for (v, b) in out_ids.iter().zip(outs) {
            let want = plan.values[v.index()].shape_on(rank);
            if dev.shape(&b) != want {
                return Err(fail(
                    format!(
                        "value {} has shape {:?}, the plan expects {:?}",
                        v.0,
                        dev.shape(&b),
                        want
                    ),
                    false,
                ));
            }
            live += dev.bytes(&b);
            bufs[v.index()] = Some(b);
        }
        stats.peak_live_bytes = stats.peak_live_bytes.max(live as u64);
        // Free what this item read for the last time, and outputs nobody reads.
        let (all_ins, _) = item_values(item, steps);
        free_dead(all_ins, at, last, keep, &mut bufs, &mut live, dev);
        free_dead(out_ids, at, last, keep, &mut bufs, &mut live, dev);
        count_item(item, &mut stats);
    }
    constants.finish_run();
    let mut kept = Vec::with_capacity(job.keep.len());
    for (i, v) in job.keep.iter().enumerate() {
        let missing = || RankFailure {
            err: ExecError::InvalidPlan(format!("rank {rank} never computes output value {}", v.0)),
            abort: false,
        };
        // The last mention of a kept value hands its buffer over; an earlier one (a value
        // kept twice) copies it.
        let t = if job.keep[i + 1..].contains(v) {
            dev.download(bufs[v.index()].as_ref().ok_or_else(missing)?)
        } else {
            dev.download_owned(bufs[v.index()].take().ok_or_else(missing)?)
        };
        let t = t.map_err(|e| RankFailure {
            err: ExecError::InvalidPlan(format!(
                "rank {rank}: downloading output value {}: {e}",
                v.0
            )),
            abort: e.is_abort(),
        })?;
        kept.push((*v, t));
    }
    stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
    if let Some(p) = profile {
        p.finish();
    }
    Ok((kept, stats))
}

/// Frees the buffers of `ids` whose last reader is item `at` or earlier (or that nobody
/// reads) and that the rank does not keep.
fn free_dead<D: Device>(
    ids: &[ValueId],
    at: usize,
    last: &[Option<usize>],
    keep: &[bool],
    bufs: &mut [Option<D::Buffer>],
    live: &mut usize,
    dev: &D,
) {
    for v in ids {
        let i = v.index();
        let dead = match last[i] {
            Some(l) => l <= at,
            None => true,
        };
        if dead && !keep[i] {
            if let Some(b) = bufs[i].take() {
                *live -= dev.bytes(&b);
            }
        }
    }
}

/// The plan steps an item stands for.
fn item_steps(item: &Item) -> usize {
    match item {
        Item::Step(_) => 1,
        Item::Fused(f) => f.steps.len(),
    }
}

/// Counts an item's steps (and its fused kernel) in the rank's statistics.
fn count_item(item: &Item, stats: &mut RankStats) {
    stats.steps += item_steps(item);
    if let Item::Fused(f) = item {
        stats.fused_steps += f.steps.len();
        *stats.fused.entry(f.op.name()).or_default() += 1;
    }
}

/// The name of the graph node a compute step runs, if any.
fn step_node<'p>(plan: &'p Plan, kind: &StepKind) -> Option<&'p str> {
    match kind {
        StepKind::Compute { node, .. } => {
            plan.graph.nodes.get(node.index()).map(|n| n.name.as_str())
        }
        _ => None,
    }
}

/// The profile's name for a step kind (op name for compute steps).
fn step_key(kind: &StepKind) -> String {
    match kind {
        StepKind::Compute { op, .. } => op.name(),
        StepKind::LoadWeight { .. } => "load_weight".into(),
        StepKind::Input { .. } => "input".into(),
        StepKind::ShardedGather { .. } => "sharded_gather".into(),
        StepKind::LocalSlice { .. } => "local_slice".into(),
        StepKind::ScaleToPartial { .. } => "scale_to_partial".into(),
        StepKind::Collective { collective, .. } => collective.as_str().into(),
    }
}

enum StepError {
    Device(DeviceError),
    Other(String),
}

impl From<DeviceError> for StepError {
    fn from(e: DeviceError) -> Self {
        StepError::Device(e)
    }
}

fn run_step<D: Device>(
    dev: &mut D,
    job: &RankJob<'_>,
    step: &Step,
    ins: &[&D::Buffer],
    constant_input: bool,
    stats: &mut RankStats,
) -> Result<Vec<D::Buffer>, StepError> {
    let plan = job.plan;
    let g = &plan.graph;
    Ok(match &step.kind {
        StepKind::LoadWeight { tensor, slice } => {
            // Validation checked that the tensor is a weight.
            let w = g
                .weights
                .get(tensor)
                .ok_or_else(|| StepError::Other("not a weight".into()))?;
            // Resident: decoded on the first run, shared by later runs of the same store.
            let t = job
                .store
                .load_resident(w, slice.as_ref())
                .map_err(|e| StepError::Other(e.to_string()))?;
            let b = dev.upload_shared(&t)?;
            stats.weight_bytes += dev.bytes(&b) as u64;
            vec![b]
        }
        StepKind::Input { tensor, slice } => {
            let name = &g.tensor(*tensor).name;
            // validate_inputs checked that every model input is present.
            let x = job
                .inputs
                .get(name)
                .ok_or_else(|| StepError::Other(format!("input '{name}' not bound")))?;
            let t = match slice {
                Some(sl) => slice_axis(x, sl.axis, sl.start, sl.end).map_err(StepError::Other)?,
                None => x.clone(),
            };
            vec![dev.upload(t)?]
        }
        StepKind::Compute { op, .. } => {
            // Validation checked that every value id is in range.
            let outs: Vec<OutSpec<'_>> = step
                .outputs
                .iter()
                .map(|v| {
                    let pv = &plan.values[v.index()];
                    OutSpec {
                        dtype: pv.dtype,
                        shape: pv.shape_on(job.rank),
                    }
                })
                .collect();
            dev.compute(op, ins, &outs)?
        }
        StepKind::ShardedGather { node, offset, rows } => {
            // Validation checked that the node is a two-input Gather.
            let vocab = g
                .tensor(g.node(*node).inputs[0])
                .shape
                .first()
                .copied()
                .unwrap_or(0);
            vec![dev.sharded_gather(ins[0], ins[1], *offset, *rows, vocab)?]
        }
        StepKind::LocalSlice { slice } => vec![dev.local_slice(ins[0], slice)?],
        StepKind::ScaleToPartial { n } => vec![dev.scale_to_partial(ins[0], *n)?],
        StepKind::Collective {
            collective,
            axis,
            to_axis,
            group,
            bytes,
            counts,
        } => {
            let spec = CollectiveSpec {
                kind: *collective,
                axis: *axis,
                to_axis: *to_axis,
                counts: counts.clone(),
            };
            // A weight shard gathered on every run: the same tensor each time, named on
            // every member by the value the step defines (values are global to the plan).
            let out = match step.outputs.first() {
                Some(v) if constant_input => {
                    dev.collective_of_constant(group, &spec, ins[0], v.index())?
                }
                _ => dev.collective(group, &spec, ins[0])?,
            };
            stats.collectives += 1;
            stats.collective_bytes += *bytes;
            stats.sent_bytes += dev.bytes(ins[0]) as u64;
            vec![out]
        }
    })
}
