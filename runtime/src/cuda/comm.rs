//! How a rank process reaches its peers: NCCL ids and communicators.
use super::probe::{guarded, nccl_library};
use super::CudaError;
use cudarc::driver::CudaStream;
use cudarc::nccl::{Comm, Id};
use std::sync::Arc;

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

/// The NCCL id of its 128 bytes (the length is checked).
pub fn id_from_bytes(bytes: &[u8]) -> Result<Id, CudaError> {
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

/// An NCCL communicator that may move to the rank thread that uses it.
pub struct NcclComm(pub Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; `NcclComm` has no shared references handed out (`Comm` is not `Sync`), so it
// is used by one thread at a time: the rank thread that owns its device. Its drop
// (`ncclCommDestroy`) is valid from any thread.
unsafe impl Send for NcclComm {}

/// Joins the NCCL communicator of `world` ranks as `rank`, on `stream` (blocks until every
/// rank joined).
pub fn join_nccl(
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    id: Id,
) -> Result<NcclComm, CudaError> {
    nccl_library()?;
    let c = guarded(
        move || Comm::from_rank(stream, rank, world, id),
        |m| CudaError::MissingLibrary {
            lib: "nccl".into(),
            msg: m,
        },
    )?
    .map_err(CudaError::nccl)?;
    Ok(NcclComm(c))
}
