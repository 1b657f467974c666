//! The plan executor: runs every rank's program of a [`Plan`] on N devices and returns the
//! plan's outputs.
//!
//! [`run_plan`] validates the plan ([`validate::validate_plan`]) and the inputs
//! ([`validate::validate_inputs`]), creates one device per rank through the chosen backend
//! ([`crate::device`]), runs each rank on its own thread (`std::thread::scope`) and collects
//! the outputs from the first rank that computes each of them. On a `[D, T]` mesh each data
//! group's ranks get their slice of the batch and the groups' outputs are concatenated
//! ([`data`]). Each rank loads only its own
//! slices of the weights, frees each buffer after its last use, and measures the bytes it holds
//! ([`RankStats::peak_live_bytes`]). When a rank fails, its peers are woken out of their
//! collectives and the first real error is returned (never a hang). [`run_one_rank`] runs a
//! single rank on a given device whose peers live in other processes (one process per GPU);
//! both go through the same rank interpreter (`rank.rs`), whatever the backend.
//!
//! Loading a plan file and checking its source model live in [`load`]; comparison with the
//! reference executor in [`check`].
use crate::device::cpu::CpuBackend;
use crate::device::{Backend, Device, DeviceKind};
use crate::weights::WeightStore;
use crate::RuntimeError;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tessera_ir::plan::{Plan, ValueId};
use tessera_ir::Tensor;

pub mod check;
mod constants;
pub mod data;
pub mod error;
mod fuse;
pub mod load;
pub mod memory;
mod profile;
mod rank;
pub mod validate;

pub use error::ExecError;
pub use profile::take_step_profiles;
pub(crate) use rank::RankProgram;
use rank::{run_prepared, run_rank, RankFailure, RankJob};

/// Stack size of each rank thread (kernels may use deep stacks on large tensors).
const RANK_STACK_BYTES: usize = 32 << 20;

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Which backend runs the devices.
    pub backend: DeviceKind,
}

/// Measured figures of one rank.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankStats {
    /// Rank.
    pub rank: usize,
    /// Largest total size of the buffers this rank held at once (weights, activations,
    /// collective results), measured after each step, before its dead inputs are freed.
    pub peak_live_bytes: u64,
    /// Bytes of weights this rank loaded (its slices only).
    pub weight_bytes: u64,
    /// Steps executed.
    pub steps: usize,
    /// Collectives executed.
    pub collectives: usize,
    /// Logical bytes of the tensors those collectives moved (as recorded in the plan).
    pub collective_bytes: u64,
    /// Bytes of this rank's own inputs to its collectives.
    pub sent_bytes: u64,
    /// Wall time of this rank's program, in milliseconds.
    pub wall_ms: f64,
    /// Fused kernels run, by kind ([`tessera_kernels::FusedOp::name`]); each replaced a
    /// chain of steps (counted in `steps`).
    pub fused: BTreeMap<&'static str, usize>,
    /// Plan steps those fused kernels replaced.
    pub fused_steps: usize,
    /// Activation-independent plan steps served from (or skipped thanks to) a session's
    /// cache of constant values instead of computed (counted in `steps`).
    pub cached_steps: usize,
}

/// Measured figures of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// Which backend ran it.
    pub backend: String,
    /// Wall time of the whole run (devices, threads, outputs), in milliseconds.
    pub wall_ms: f64,
    /// Per-rank figures, by rank.
    pub ranks: Vec<RankStats>,
}

/// Runs `plan` with `inputs` (by model input name) on the backend `opts` names and returns
/// its outputs, in the graph's output order, plus measured statistics.
pub fn run_plan(
    plan: &Plan,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
    opts: &RunOptions,
) -> Result<(Vec<Tensor>, RunStats), RuntimeError> {
    match opts.backend {
        DeviceKind::Cpu => validate::validate_plan(plan)
            .and_then(|_| memory::check_planned_memory(plan, memory::host_cap()?))
            .and_then(|_| run_on(&CpuBackend::default(), plan, store, inputs)),
        DeviceKind::Cuda => run_cuda(plan, store, inputs),
    }
    .map_err(into_runtime_error)
}

/// Runs every rank of the plan as a lane (stream) of GPU 0 ([`crate::device::cuda`]; without
/// the `cuda` feature its stub reports that the backend is not compiled in).
fn run_cuda(
    plan: &Plan,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Vec<Tensor>, RunStats), ExecError> {
    let backend = crate::device::cuda::CudaBackend::new()?;
    run_on(&backend, plan, store, inputs)
}

/// Maps an executor error onto the crate's error type.
pub fn into_runtime_error(e: ExecError) -> RuntimeError {
    match e {
        ExecError::Input { name, msg } => RuntimeError::Input { name, msg },
        other => RuntimeError::Plan(other.to_string()),
    }
}

/// Runs `plan` on the devices of `backend` (see [`run_plan`]).
pub fn run_on<B: Backend>(
    backend: &B,
    plan: &Plan,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Vec<Tensor>, RunStats), ExecError> {
    validate::validate_plan(plan)?;
    validate::validate_inputs(plan, inputs)?;
    keep_freed_memory();
    let start = Instant::now();
    let n = plan.ranks.len();
    let devices = backend.create_devices(n)?;
    let providers = output_providers(plan);
    let groups = data::split_inputs(plan, inputs)?;
    let failures = AtomicUsize::new(0);
    let results: Vec<RankResult> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(n);
        for (rank, dev) in devices.into_iter().enumerate() {
            // Validation: rank < D·T, so its group is below D, the number of input sets.
            let inputs = groups
                .as_ref()
                .map_or(inputs, |g| &g[plan.mesh.group_of(rank)]);
            let job = rank_job(plan, store, inputs, rank, |v| {
                providers.get(v).is_some_and(|p| p.contains(&rank))
            });
            let failures = &failures;
            let h = std::thread::Builder::new()
                .name(format!("tessera-rank-{rank}"))
                .stack_size(RANK_STACK_BYTES)
                .spawn_scoped(s, move || {
                    let mut dev = dev;
                    dev.bind_thread();
                    rank_thread(&mut dev, &job, None, failures)
                });
            handles.push(h);
        }
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| match h {
                // rank_thread catches panics, so a join error is not expected.
                Ok(h) => h.join().unwrap_or_else(|_| {
                    let err = ExecError::Panic {
                        rank,
                        msg: "thread panicked".into(),
                    };
                    Err((usize::MAX, RankFailure { err, abort: false }))
                }),
                Err(e) => {
                    let err = ExecError::Panic {
                        rank,
                        msg: format!("cannot spawn thread: {e}"),
                    };
                    Err((usize::MAX, RankFailure { err, abort: false }))
                }
            })
            .collect()
    });
    merge_ranks(plan, backend.kind().to_string(), results, start)
}

/// What one rank of a run hands back: its kept outputs and statistics, or its failure
/// stamped with the order in which ranks failed.
pub(crate) type RankResult = Result<RankOutput, (usize, RankFailure)>;

/// Gathers the ranks' results of one run (in rank order) into the plan's outputs and the
/// run's statistics, or the root failure: the earliest that is not a mere "a peer failed"
/// report.
pub(crate) fn merge_ranks(
    plan: &Plan,
    backend: String,
    results: Vec<RankResult>,
    start: Instant,
) -> Result<(Vec<Tensor>, RunStats), ExecError> {
    // The kept values of each data group (one group on a 1-D mesh).
    let mut values: Vec<BTreeMap<ValueId, Tensor>> = vec![BTreeMap::new(); plan.mesh.data_groups()];
    let mut stats = RunStats {
        backend,
        ..RunStats::default()
    };
    let mut failed: Vec<(bool, usize, RankFailure)> = Vec::new();
    for r in results {
        match r {
            Ok((kept, st)) => {
                let g = plan.mesh.group_of(st.rank);
                values
                    .get_mut(g)
                    .ok_or_else(|| {
                        ExecError::InvalidPlan(format!("rank {} is in no data group", st.rank))
                    })?
                    .extend(kept);
                stats.ranks.push(st);
            }
            Err((order, f)) => failed.push((f.abort, order, f)),
        }
    }
    if let Some((_, _, f)) = failed
        .into_iter()
        .min_by_key(|(abort, order, _)| (*abort, *order))
    {
        return Err(f.err);
    }
    let per_group = values
        .into_iter()
        .enumerate()
        .map(|(g, mut values)| {
            plan.outputs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    // Moved out, unless a later output names the same value.
                    let t = if plan.outputs[i + 1..].contains(v) {
                        values.get(v).cloned()
                    } else {
                        values.remove(v)
                    };
                    t.ok_or_else(|| {
                        ExecError::InvalidPlan(format!(
                            "output value {} missing from data group {g}",
                            v.0
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = data::gather_outputs(plan, per_group)?;
    stats.wall_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok((outputs, stats))
}

/// Runs rank `rank` of `plan` alone on `dev`, whose peers run in other processes (one
/// process per GPU; `dev` reaches them through its collectives), and returns every plan
/// output this rank computes (downloaded, in the plan's output order; `None` for outputs
/// only other ranks compute; on a `[D, T]` mesh, its data group's slice of the batch) with
/// the rank's statistics. On failure `dev`'s peers are told
/// ([`Device::abort_peers`]).
pub fn run_one_rank<D: Device>(
    dev: D,
    plan: &Plan,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
    rank: usize,
) -> Result<(Vec<Option<Tensor>>, RankStats), ExecError> {
    validate::validate_plan(plan)?;
    validate::validate_inputs(plan, inputs)?;
    if rank >= plan.ranks.len() {
        return Err(ExecError::InvalidPlan(format!(
            "rank {rank} is not below the plan's {} ranks",
            plan.ranks.len()
        )));
    }
    let defined: std::collections::BTreeSet<ValueId> = plan.ranks[rank]
        .steps
        .iter()
        .flat_map(|s| s.outputs.iter().copied())
        .collect();
    let groups = data::split_inputs(plan, inputs)?;
    // rank < D·T (checked above), so its group is below D, the number of input sets.
    let inputs = groups
        .as_ref()
        .map_or(inputs, |g| &g[plan.mesh.group_of(rank)]);
    let job = rank_job(plan, store, inputs, rank, |v| defined.contains(v));
    let failures = AtomicUsize::new(0);
    let mut dev = dev;
    dev.bind_thread();
    let (kept, stats) = rank_thread(&mut dev, &job, None, &failures).map_err(|(_, f)| f.err)?;
    let kept: BTreeMap<ValueId, Tensor> = kept.into_iter().collect();
    let outputs = plan.outputs.iter().map(|v| kept.get(v).cloned()).collect();
    Ok((outputs, stats))
}

/// The job of rank `rank`: its program, keeping the plan outputs `keeps` accepts.
pub(crate) fn rank_job<'a>(
    plan: &'a Plan,
    store: &'a WeightStore,
    inputs: &'a BTreeMap<String, Tensor>,
    rank: usize,
    keeps: impl Fn(&ValueId) -> bool,
) -> RankJob<'a> {
    RankJob {
        plan,
        store,
        inputs,
        rank,
        keep: plan.outputs.iter().copied().filter(|v| keeps(v)).collect(),
        cancel: None,
    }
}

/// Asks glibc's allocator (once per process) to keep freed activation buffers for reuse
/// instead of returning them to the OS: buffers up to 32 MiB come from the heap (not fresh
/// `mmap`s) and the heap is not trimmed below 1 GiB of free space. Without this, every
/// large activation of a run is a fresh mapping whose pages fault in again (a third of the
/// time of MiniLM's elementwise ops at batch 8). No effect on other C libraries.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tuning parameters; both values are in
            // the documented ranges (the mmap threshold's maximum is 32 MiB on 64-bit), and
            // a rejected value leaves the default in place (return value 0, ignored).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}

/// What a rank hands back: its kept output values and its statistics.
type RankOutput = (Vec<(ValueId, Tensor)>, RankStats);

/// Runs one rank (its `program` when prepared, else preparing it) inside the device's
/// compute context ([`Device::enter`]), catching panics; on failure stamps the failure with
/// its order and wakes the peers (after stamping, so a peer's "aborted" failure always comes
/// later). The caller binds its thread first ([`Device::bind_thread`]): a session's worker
/// calls this from inside the context, where the thread is a pool thread already bound to a
/// core of its own, and binding it to the rank's home core would stack two threads there.
pub(crate) fn rank_thread<D: Device>(
    dev: &mut D,
    job: &RankJob<'_>,
    program: Option<&RankProgram>,
    failures: &AtomicUsize,
) -> RankResult {
    let rank = job.rank;
    let res = dev
        .enter(|dev| {
            let r = catch_unwind(AssertUnwindSafe(|| match program {
                Some(p) => run_prepared(dev, job, p),
                None => run_rank(dev, job),
            }));
            dev.finish_run();
            r
        })
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(RankFailure {
                err: ExecError::Panic { rank, msg },
                abort: false,
            })
        });
    res.map_err(|f| {
        let order = failures.fetch_add(1, Ordering::SeqCst);
        dev.abort_peers();
        (order, f)
    })
}

/// For each plan output, the first rank of each data group whose program defines it.
pub(crate) fn output_providers(plan: &Plan) -> BTreeMap<ValueId, Vec<usize>> {
    let mut p: BTreeMap<ValueId, Vec<usize>> = BTreeMap::new();
    for v in &plan.outputs {
        for group in plan.mesh.groups() {
            if let Some(&r) = group.iter().find(|&&r| {
                plan.ranks
                    .get(r)
                    .is_some_and(|prog| prog.steps.iter().any(|s| s.outputs.contains(v)))
            }) {
                p.entry(*v).or_default().push(r);
            }
        }
    }
    p
}
