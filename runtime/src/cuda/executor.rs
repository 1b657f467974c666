//! [`CudaExecutor`]: one rank of a plan on one GPU, collectives through NCCL.
use super::collectives::{nccl_collective, CollectiveCall};
use super::context::{Gpu, Lane};
use super::probe::{guarded, nccl_library};
use super::program::RankRun;
use super::weights::WeightSource;
use super::CudaError;
use cudarc::nccl::{Comm, Id};
use std::collections::BTreeMap;
use tessera_ir::plan::{Plan, StepKind};
use tessera_ir::Tensor;

/// How a rank reaches the others.
#[derive(Debug, Clone)]
pub enum CommSpec {
    /// A single rank (world size 1): no communication.
    Single {
        /// CUDA device ordinal.
        device: usize,
    },
    /// NCCL with the unique id rank 0 created and the rendezvous distributed.
    Nccl {
        /// CUDA device ordinal (the rank's LOCAL_RANK).
        device: usize,
        /// The 128 bytes of the NCCL unique id.
        id: Vec<u8>,
    },
}

/// Creates a fresh NCCL unique id (rank 0) and returns its bytes.
pub fn new_nccl_id() -> Result<Vec<u8>, CudaError> {
    nccl_library()?;
    let id = guarded(Id::new, |m| CudaError::MissingLibrary {
        lib: "nccl".into(),
        msg: m,
    })?
    .map_err(CudaError::nccl)?;
    Ok(id.internal().iter().map(|c| *c as u8).collect())
}

fn id_from_bytes(bytes: &[u8]) -> Result<Id, CudaError> {
    if bytes.len() != 128 {
        return Err(CudaError::Nccl(format!(
            "NCCL unique id has {} bytes, expected 128",
            bytes.len()
        )));
    }
    let mut internal = [0 as std::ffi::c_char; 128];
    for (d, s) in internal.iter_mut().zip(bytes) {
        *d = *s as std::ffi::c_char;
    }
    Ok(Id::uninit(internal))
}

/// Runs one rank's program of a plan on a GPU.
pub struct CudaExecutor {
    rank: usize,
    world: usize,
    lane: Lane,
    comm: Option<Comm>,
}

impl CudaExecutor {
    /// Opens the device and, for NCCL, joins the communicator (blocks until all `world`
    /// ranks joined).
    pub fn new(rank: usize, world: usize, comm: CommSpec) -> Result<CudaExecutor, CudaError> {
        if rank >= world {
            return Err(CudaError::Plan(format!(
                "rank {rank} is not below world size {world}"
            )));
        }
        let (device, id) = match comm {
            CommSpec::Single { device } => {
                if world != 1 {
                    return Err(CudaError::Plan(format!(
                        "world size {world} needs NCCL (CommSpec::Nccl) or virtual ranks"
                    )));
                }
                (device, None)
            }
            CommSpec::Nccl { device, id } => (device, Some(id_from_bytes(&id)?)),
        };
        let lane = Gpu::open(device)?.lane()?;
        let comm = match id {
            None => None,
            Some(id) => {
                nccl_library()?;
                let stream = lane.stream.clone();
                let c = guarded(
                    move || Comm::from_rank(stream, rank, world, id),
                    |m| CudaError::MissingLibrary {
                        lib: "nccl".into(),
                        msg: m,
                    },
                )?
                .map_err(CudaError::nccl)?;
                Some(c)
            }
        };
        Ok(CudaExecutor {
            rank,
            world,
            lane,
            comm,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Runs this rank's program and returns the plan outputs (replicated: every rank
    /// returns the same values).
    pub fn run(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<Tensor>, CudaError> {
        let mut run = RankRun::new(plan, self.rank, self.world)?;
        while let Some(step) = run.run_until_collective(&self.lane, weights, inputs)? {
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
            let call = CollectiveCall {
                kind: *collective,
                axis: *axis,
                to_axis: *to_axis,
                group: group.clone(),
            };
            let input = step
                .inputs
                .first()
                .ok_or_else(|| CudaError::Plan("collective without input".into()))?;
            let x = run.value(*input)?.clone();
            let out = match &self.comm {
                Some(comm) => nccl_collective(&self.lane, comm, &call, &x),
                None if self.world == 1 => Ok(x),
                None => Err(CudaError::Plan("collective without a communicator".into())),
            }
            .map_err(|e| run.collective_err(e))?;
            run.finish_collective(out)?;
        }
        run.outputs(&self.lane)
    }
}
