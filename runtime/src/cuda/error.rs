//! Errors of the CUDA backend.
use thiserror::Error;

/// Errors raised by the CUDA backend, its launcher and its rendezvous.
#[derive(Debug, Error)]
pub enum CudaError {
    /// The CUDA driver (or another CUDA library) could not be loaded or initialised.
    #[error("no CUDA driver found ({0})")]
    NoDriver(String),
    /// A CUDA library is missing (NVRTC, cuBLAS, NCCL).
    #[error("CUDA library '{lib}' not found: {msg}")]
    MissingLibrary {
        /// Library name (`nvrtc`, `cublas`, `nccl`).
        lib: String,
        /// Details.
        msg: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// NVRTC failed to compile a kernel source.
    #[error("NVRTC compiling '{source_name}': {msg}")]
    Compile {
        /// Kernel source file name.
        source_name: String,
        /// Compiler log.
        msg: String,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Blas(String),
    /// An NCCL call failed.
    #[error("NCCL: {0}")]
    Nccl(String),
    /// A collective failed, timed out or saw an asynchronous error on one rank.
    #[error("rank {rank}, collective {what}: {msg}")]
    Collective {
        /// The rank that saw it.
        rank: usize,
        /// The collective (`all_reduce`, ...).
        what: String,
        /// What happened.
        msg: String,
    },
    /// An op or step the CUDA backend does not support.
    #[error("cuda backend: {0}")]
    Unsupported(String),
    /// A step of a plan failed.
    #[error("rank {rank}, step {step} ({what}): {msg}")]
    Step {
        /// Rank.
        rank: usize,
        /// Step index in the rank's program.
        step: usize,
        /// Step description (op or step kind).
        what: String,
        /// What went wrong.
        msg: String,
    },
    /// The plan is inconsistent (missing value, wrong rank count, bad input).
    #[error("plan: {0}")]
    Plan(String),
    /// A bad distributed environment variable.
    #[error("environment variable {var}: {msg}")]
    Env {
        /// Variable name.
        var: String,
        /// What is wrong.
        msg: String,
    },
    /// The TCP rendezvous failed (timeout, refused, protocol error).
    #[error("rendezvous at {addr}: {msg}")]
    Rendezvous {
        /// Address of the master.
        addr: String,
        /// What went wrong.
        msg: String,
    },
    /// The launcher failed, or a rank process failed.
    #[error("launcher: {0}")]
    Launch(String),
}

impl CudaError {
    /// Wraps any displayable driver error.
    pub(crate) fn driver(e: impl std::fmt::Display) -> CudaError {
        CudaError::Driver(e.to_string())
    }
    /// Wraps any displayable cuBLAS error.
    pub(crate) fn blas(e: impl std::fmt::Display) -> CudaError {
        CudaError::Blas(e.to_string())
    }
}

impl From<CudaError> for crate::RuntimeError {
    /// CUDA failures surface as plan-execution errors of the runtime.
    fn from(e: CudaError) -> Self {
        crate::RuntimeError::Plan(format!("cuda: {e}"))
    }
}

impl From<CudaError> for crate::device::DeviceError {
    /// CUDA failures inside a device operation are backend errors.
    fn from(e: CudaError) -> Self {
        crate::device::DeviceError::Backend(e.to_string())
    }
}
