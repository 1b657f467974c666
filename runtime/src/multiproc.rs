//! One process per GPU: `tessera-run --backend cuda --nproc N` on one machine, and
//! torchrun-style ranks (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) across
//! machines. The launcher re-executes `tessera-run` once per local rank; each rank joins the
//! NCCL group through the TCP rendezvous in `crate::cuda` and runs its own program.
//!
//! Without the `cuda` feature both entry points fail with the stub's one-line error, so the
//! binary needs no `cfg`.
use crate::exec::{ExecError, RankStats};
use crate::weights::WeightStore;
use std::collections::BTreeMap;
use tessera_ir::plan::Plan;
use tessera_ir::Tensor;

/// What this `tessera-run` process is in a multi-process CUDA run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// Spawn `nproc` rank processes on this machine and wait for them.
    Launcher {
        /// Local ranks to start.
        nproc: usize,
    },
    /// A rank process: RANK and WORLD_SIZE are set in the environment.
    Rank,
    /// Everything in this process (CPU devices, or CUDA virtual ranks on one GPU).
    InProcess,
}

/// Decides the role from `--nproc` and the environment (RANK + WORLD_SIZE set → a rank).
pub fn role(nproc: Option<usize>) -> ProcessRole {
    let is_rank = std::env::var_os("RANK").is_some() && std::env::var_os("WORLD_SIZE").is_some();
    match (is_rank, nproc) {
        (true, _) => ProcessRole::Rank,
        (false, Some(n)) => ProcessRole::Launcher { nproc: n },
        (false, None) => ProcessRole::InProcess,
    }
}

/// Starts `nproc` copies of the current program with the rank variables set and waits; fails
/// (after stopping the others) as soon as one rank fails.
#[cfg(feature = "cuda")]
pub fn launch(nproc: usize) -> Result<(), ExecError> {
    use crate::cuda::launcher::{launch_self, LaunchSpec};
    let spec = LaunchSpec::single_node_from_env(nproc).map_err(backend_error)?;
    launch_self(&spec).map_err(backend_error)
}

/// Runs this process's rank of `plan` (rank and world from the environment) through the
/// executor's rank interpreter and returns its rank index, the plan outputs, all of which
/// this rank must compute (replicated outputs; rank 0 writes them), and its statistics.
#[cfg(feature = "cuda")]
pub fn run_rank(
    plan: &Plan,
    store: &WeightStore,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(usize, Vec<Tensor>, RankStats), ExecError> {
    // Checked before the rendezvous too, so that bad inputs fail every rank the same way
    // instead of one rank dropping out of the NCCL group.
    crate::exec::validate::validate_plan(plan)?;
    crate::exec::validate::validate_inputs(plan, inputs)?;
    if plan.data.is_some() {
        // Each rank would hold only its data group's slice of the outputs, and rank 0 writes
        // them: gathering the groups' slices across processes is not done yet.
        return Err(ExecError::InvalidPlan(format!(
            "a plan with a data axis (mesh {:?}) runs in one process; one process per GPU runs 1-D plans",
            plan.mesh.shape
        )));
    }
    let mut session = crate::cuda::RankSession::from_env().map_err(backend_error)?;
    if session.env.world_size != plan.ranks.len() {
        return Err(ExecError::InvalidPlan(format!(
            "WORLD_SIZE={} but the plan has {} ranks",
            session.env.world_size,
            plan.ranks.len()
        )));
    }
    let rank = session.env.rank;
    let (outputs, stats) = session.run(plan, store, inputs)?;
    session.finish().map_err(backend_error)?;
    let outputs = outputs
        .into_iter()
        .zip(&plan.outputs)
        .map(|(t, v)| {
            t.ok_or_else(|| {
                ExecError::InvalidPlan(format!("rank {rank} never computes output value {}", v.0))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((rank, outputs, stats))
}

#[cfg(feature = "cuda")]
fn backend_error(e: crate::cuda::CudaError) -> ExecError {
    ExecError::Device(crate::device::DeviceError::Backend(e.to_string()))
}

/// Stub: the CUDA backend is not compiled in.
#[cfg(not(feature = "cuda"))]
pub fn launch(_nproc: usize) -> Result<(), ExecError> {
    Err(not_compiled())
}

/// Stub: the CUDA backend is not compiled in.
#[cfg(not(feature = "cuda"))]
pub fn run_rank(
    _plan: &Plan,
    _store: &WeightStore,
    _inputs: &BTreeMap<String, Tensor>,
) -> Result<(usize, Vec<Tensor>, RankStats), ExecError> {
    Err(not_compiled())
}

#[cfg(not(feature = "cuda"))]
fn not_compiled() -> ExecError {
    ExecError::Device(crate::device::DeviceError::Backend(
        crate::device::cuda::NOT_COMPILED.into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_follows_flag_and_environment() {
        // RANK/WORLD_SIZE are not set by the test harness.
        if std::env::var_os("RANK").is_none() {
            assert_eq!(role(None), ProcessRole::InProcess);
            assert_eq!(role(Some(4)), ProcessRole::Launcher { nproc: 4 });
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn stubs_name_the_missing_feature() {
        let e = launch(2).unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
