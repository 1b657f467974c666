//! One rank process of a multi-GPU run: environment → rendezvous → NCCL → the executor's
//! rank interpreter ([`crate::exec::run_one_rank`]) on this rank's [`CudaDevice`].
use super::comm::{new_nccl_id, CommSpec};
use super::env::{device_ordinal, DistEnv};
use super::probe::{compute_libraries, driver_device_count, nccl_library};
use super::rendezvous::{exit_on_peer_loss, fetch, RendezvousServer, Watchdog};
use super::{CudaDevice, CudaError};
use crate::exec::{ExecError, RankStats};
use crate::weights::WeightStore;
use std::collections::BTreeMap;
use tessera_ir::plan::Plan;
use tessera_ir::Tensor;

/// A joined rank: its environment, device and liveness watchdog.
pub struct RankSession {
    /// The rank's environment.
    pub env: DistEnv,
    device: Option<CudaDevice>,
    watchdog: Option<Watchdog>,
}

impl RankSession {
    /// Reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, checks CUDA, runs the
    /// rendezvous (rank 0 creates the NCCL id and serves it) and joins NCCL.
    pub fn from_env() -> Result<RankSession, CudaError> {
        RankSession::join(DistEnv::from_env()?)
    }

    /// As [`RankSession::from_env`], with an explicit environment.
    pub fn join(env: DistEnv) -> Result<RankSession, CudaError> {
        let devices = driver_device_count()?;
        compute_libraries()?;
        let device = device_ordinal(env.rank, env.local_rank, devices)?;
        if env.world_size == 1 {
            let device = CudaDevice::open(0, 1, CommSpec::Single { device })?;
            return Ok(RankSession {
                env,
                device: Some(device),
                watchdog: None,
            });
        }
        nccl_library()?;
        let (id, watchdog) = if env.rank == 0 {
            let server = RendezvousServer::bind(&format!("0.0.0.0:{}", env.master_port))?;
            let id = new_nccl_id()?;
            let wd = server.serve(
                &id,
                env.world_size,
                env.rendezvous_timeout,
                exit_on_peer_loss(),
            )?;
            (id, wd)
        } else {
            fetch(
                &env.master_endpoint(),
                env.rank,
                env.world_size,
                env.rendezvous_timeout,
                exit_on_peer_loss(),
            )?
        };
        let device = CudaDevice::open(
            env.rank,
            env.world_size,
            CommSpec::Nccl {
                device,
                id,
                timeouts: env.nccl,
            },
        )?;
        Ok(RankSession {
            env,
            device: Some(device),
            watchdog: Some(watchdog),
        })
    }

    /// Runs this rank's program (once per session) and returns the plan outputs it computes
    /// (`None` for those only other ranks compute; see [`crate::exec::run_one_rank`]).
    pub fn run(
        &mut self,
        plan: &Plan,
        store: &WeightStore,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(Vec<Option<Tensor>>, RankStats), ExecError> {
        let device = self.device.take().ok_or_else(|| {
            ExecError::InvalidPlan(format!("rank {}: the session already ran", self.env.rank))
        })?;
        crate::exec::run_one_rank(device, plan, store, inputs, self.env.rank)
    }

    /// Signals a normal end to the other ranks (rank 0 waits for all of them).
    pub fn finish(mut self) -> Result<(), CudaError> {
        match self.watchdog.take() {
            Some(w) => w.finish(self.env.rendezvous_timeout),
            None => Ok(()),
        }
    }
}
