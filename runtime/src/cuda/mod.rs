//! CUDA backend (feature `cuda`): cuBLAS matmuls, NVRTC-compiled kernels, NCCL
//! collectives, one process per GPU.
//!
//! * [`CudaDevice`] implements [`crate::device::Device`], so the plan executor's rank
//!   interpreter ([`crate::exec`]) runs CUDA ranks as it runs CPU ranks; [`CudaBackend`] runs
//!   all ranks of a plan as lanes (streams) of one GPU, collectives in device memory
//!   ([`virtual_ranks`]); a rank process has one device whose collectives go through NCCL.
//! * [`launcher`] spawns one process per GPU with torchrun-style variables ([`env`]);
//!   [`rendezvous`] hands rank 0's NCCL id to the others over TCP and then watches the
//!   connections so that a dead rank stops the rest; [`RankSession`] puts it together.
//! * Everything opens the CUDA libraries at run time (`dynamic-loading`): on a machine
//!   without a driver, [`probe::unavailable_reason`] says why and nothing panics.
//!
//! Verification status: the pure-Rust parts (rendezvous, launcher, environment, index and
//! launch math, kernel-source checks) are tested on the CPU; the GPU paths compile but are
//! unverified on a GPU (see docs/gpu.md).
pub mod buffer;
pub mod collectives;
pub mod comm;
pub mod compile;
pub mod context;
mod device;
pub mod distributed;
pub mod env;
mod error;
pub mod exchange;
pub mod launch_cfg;
pub mod launcher;
pub mod libs;
pub mod meta;
pub mod nccl;
pub mod ops;
pub mod probe;
pub mod rendezvous;
pub mod source;
pub mod virtual_ranks;
pub mod watchdog;

pub use comm::CommSpec;
/// The cudarc crate this backend is built on (for tools and GPU tests that call cuBLAS or
/// the driver directly, e.g. the GEMM timing of `scripts/gpu_check.sh`).
pub use cudarc;
pub use device::{CudaBackend, CudaDevice};
pub use distributed::RankSession;
pub use error::CudaError;
pub use virtual_ranks::{LaneExchange, LaneGroups};
