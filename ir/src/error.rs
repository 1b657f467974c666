//! IR errors.
use thiserror::Error;

/// Errors raised while building or checking IR.
#[derive(Debug, Error)]
pub enum IrError {
    /// Shape inference rejected a node.
    #[error("node '{node}' ({op}): {msg}")]
    Shape {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// A structural invariant of the graph does not hold.
    #[error("invalid graph: {0}")]
    Invalid(String),
    /// Data does not match its declared dtype or shape.
    #[error("tensor '{name}': {msg}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
}
