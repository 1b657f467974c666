//! Tessera as a library: compile an ONNX model into a tensor-parallel plan and run it in a
//! resident session, without going through plan files ([`session`]). The `tessera` binary
//! (the CLI) and the Python package (`python/`) are built on the same crates.
#![warn(missing_docs)]

pub mod session;

pub use session::{compile, open_session, ApiError, CompileOptions, CompiledPlan};
pub use tessera_runtime::session::{IoInfo, Session, SessionOptions};
