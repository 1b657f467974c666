//! Runtime errors: one-line messages naming the file, weight, tensor or node involved.
use tessera_kernels::KernelError;
use thiserror::Error;

/// Errors raised while loading weights or executing a graph or plan.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A file could not be opened, mapped or read.
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong (the OS error).
        msg: String,
    },
    /// A weight's bytes are missing, out of range or do not match its dtype and shape.
    #[error("weight '{name}' ({path}): {msg}")]
    Weight {
        /// Weight name.
        name: String,
        /// File holding its bytes (or `inline`).
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A graph input is missing, unknown, or has the wrong dtype or shape.
    #[error("input '{name}': {msg}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// A kernel failed on a node.
    #[error("node '{node}': {source}")]
    Kernel {
        /// Node name.
        node: String,
        /// The kernel's error.
        source: KernelError,
    },
    /// The graph or plan is malformed (a value read before it is produced, a bad id, ...).
    #[error("invalid graph: {0}")]
    Graph(String),
    /// Plan execution failed (devices, collectives, steps).
    #[error("plan execution: {0}")]
    Plan(String),
}
