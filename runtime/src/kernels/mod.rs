//! CPU kernels, shared by constant folding, the reference executor and the CPU devices.
use tessera_ir::{Op, Tensor};
use thiserror::Error;

/// A kernel failed (bad operand types or shapes that inference should have caught).
#[derive(Debug, Error)]
#[error("{op}: {msg}")]
pub struct KernelError {
    /// Op name.
    pub op: String,
    /// What went wrong.
    pub msg: String,
}

/// Evaluates `op` on host tensors and returns its outputs.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, KernelError> {
    let _ = inputs;
    Err(KernelError { op: op.name(), msg: "not implemented yet".into() })
}
