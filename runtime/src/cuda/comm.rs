//! How a rank process reaches its peers: NCCL ids and communicators.
use super::nccl::{Comm, NcclApi, UniqueId};
use super::watchdog::{exit_process, Deadman};
use super::CudaError;
use cudarc::driver::CudaStream;
use std::sync::Arc;
use std::time::Duration;

/// Default bound on joining the NCCL communicator.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default bound on one collective (torch's NCCL watchdog default is 10 minutes).
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Exit status of a rank process in which an NCCL call (the join, or the enqueue of a
/// collective, e.g. a `ncclGroupEnd` waiting for a peer's connection) did not return in
/// time.
pub const EXIT_NCCL_STUCK: i32 = 4;

/// Time limits of an NCCL rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NcclTimeouts {
    /// Joining the communicator (`ncclCommInitRank`); past it the process exits.
    pub init: Duration,
    /// One collective, from enqueue to completion; past it the collective fails.
    pub collective: Duration,
}

impl Default for NcclTimeouts {
    fn default() -> Self {
        NcclTimeouts {
            init: DEFAULT_INIT_TIMEOUT,
            collective: DEFAULT_COLLECTIVE_TIMEOUT,
        }
    }
}

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
        /// CUDA device ordinal (from LOCAL_RANK, see [`super::env::device_ordinal`]).
        device: usize,
        /// The 128 bytes of the NCCL unique id.
        id: Vec<u8>,
        /// Time limits.
        timeouts: NcclTimeouts,
    },
}

/// Creates a fresh NCCL unique id (rank 0) and returns its bytes.
pub fn new_nccl_id() -> Result<Vec<u8>, CudaError> {
    let id = NcclApi::get()?.unique_id()?;
    Ok(id.internal.iter().map(|c| *c as u8).collect())
}

/// The NCCL id of its 128 bytes (the length is checked).
pub fn id_from_bytes(bytes: &[u8]) -> Result<UniqueId, CudaError> {
    if bytes.len() != 128 {
        return Err(CudaError::Nccl(format!(
            "NCCL unique id has {} bytes, expected 128",
            bytes.len()
        )));
    }
    let mut id = UniqueId { internal: [0; 128] };
    for (d, s) in id.internal.iter_mut().zip(bytes) {
        *d = *s as std::ffi::c_char;
    }
    Ok(id)
}

/// An NCCL communicator with its time limits and the watcher of its blocking calls.
pub struct NcclComm {
    /// The communicator.
    pub comm: Comm,
    /// Time limits.
    pub timeouts: NcclTimeouts,
    /// Watches calls into NCCL that may block (the join, each enqueue): one that does not
    /// return within its limit ends the process ([`EXIT_NCCL_STUCK`]).
    pub deadman: Deadman,
    /// Sub-communicators of the groups of ranks smaller than the world (each data group of
    /// a `[D, T]` mesh), made by [`NcclComm::group_comm`] on a group's first collective.
    pub subgroups: Vec<(Vec<usize>, Comm)>,
}

impl NcclComm {
    /// The communicator of `group` (global ranks in member order): the world's when it is
    /// `0..world`, else the group's sub-communicator, split off the world's on first use
    /// (`ncclCommSplit`, colour: the group's first rank, key: the member index). The split
    /// is collective over the world: every rank must reach its groups' first collectives in
    /// the same order, as the ranks of a data × tensor plan do (every group runs the same
    /// program); a rank that never comes is bounded by the init timeout, like the join.
    pub fn group_comm(&mut self, group: &[usize]) -> Result<&mut Comm, CudaError> {
        let world = self.comm.world_size();
        if group.len() == world && group.iter().enumerate().all(|(i, r)| i == *r) {
            return Ok(&mut self.comm);
        }
        let rank = self.comm.rank();
        let member = group
            .iter()
            .position(|&m| m == rank)
            .ok_or_else(|| CudaError::Plan(format!("rank {rank} is not in the group {group:?}")))?;
        if group.iter().any(|&m| m >= world) {
            return Err(CudaError::Plan(format!(
                "group {group:?} is not a set of ranks below {world}"
            )));
        }
        let at = match self.subgroups.iter().position(|(g, _)| g == group) {
            Some(i) => i,
            None => {
                let sub = {
                    let _armed = self.deadman.arm(
                        &format!(
                            "NCCL split of group {group:?} (ncclCommSplit; TESSERA_NCCL_INIT_TIMEOUT_S)"
                        ),
                        self.timeouts.init,
                    );
                    self.comm.split(group[0], member, group.len())?
                };
                self.subgroups.push((group.to_vec(), sub));
                self.subgroups.len() - 1
            }
        };
        Ok(&mut self.subgroups[at].1)
    }
}

/// Joins the NCCL communicator of `world` ranks as `rank` on `stream`'s device (blocks
/// until every rank joined). A [`Deadman`] bounds the join: past `timeouts.init` the
/// process prints which rank and call timed out and exits with [`EXIT_NCCL_STUCK`]
/// (`ncclCommInitRank` cannot be interrupted, and the communicator to abort does not exist
/// yet). The same deadman then watches the enqueue of each collective.
pub fn join_nccl(
    stream: &Arc<CudaStream>,
    rank: usize,
    world: usize,
    id: &UniqueId,
    timeouts: NcclTimeouts,
) -> Result<NcclComm, CudaError> {
    NcclApi::get()?;
    stream
        .context()
        .bind_to_thread()
        .map_err(CudaError::driver)?;
    let deadman = Deadman::start(rank, exit_process(EXIT_NCCL_STUCK));
    let comm = {
        let _armed = deadman.arm(
            &format!("NCCL init (ncclCommInitRank, {world} ranks; TESSERA_NCCL_INIT_TIMEOUT_S)"),
            timeouts.init,
        );
        Comm::init(id, rank, world)?
    };
    Ok(NcclComm {
        comm,
        timeouts,
        deadman,
        subgroups: Vec::new(),
    })
}
