//! Tessera runtime: the reference executor, plan execution over N devices
//! with collectives, and the CUDA backend.
#![warn(missing_docs)]
pub mod error;
pub mod reference;
pub mod weights;
pub use error::RuntimeError;

pub mod collectives;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod exec;
pub mod multiproc;
pub mod npy;
pub mod session;
