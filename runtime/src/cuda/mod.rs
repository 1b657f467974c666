//! CUDA backend (feature `cuda`): cuBLAS matmuls, NVRTC-compiled kernels, NCCL
//! collectives, one process per GPU.
//!
//! * [`CudaExecutor`] runs one rank's program of a plan with device buffers (same step
//!   semantics as the CPU executor); [`VirtualRanks`] runs all ranks of a plan as streams
//!   of one GPU (single-GPU testing of partitioned plans).
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
pub mod context;
pub mod distributed;
pub mod env;
mod error;
pub mod executor;
pub mod launch_cfg;
pub mod launcher;
pub mod meta;
pub mod ops;
pub mod probe;
pub mod program;
pub mod rendezvous;
pub mod source;
pub mod virtual_ranks;
pub mod weights;

pub use distributed::RankSession;
pub use error::CudaError;
pub use executor::{CommSpec, CudaExecutor};
pub use virtual_ranks::VirtualRanks;
pub use weights::{InlineWeights, NamedWeights, WeightSource};
