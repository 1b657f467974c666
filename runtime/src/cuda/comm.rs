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
    })
}
