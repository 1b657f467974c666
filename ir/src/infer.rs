//! Shape and dtype inference for every [`Op`](crate::Op).
//!
//! Used by the importer (every imported node), the partitioner (local shapes) and the
//! runtime (input checks).
use crate::{DType, IrError, Op};

/// Infers output dtypes and shapes of `op` from its inputs' dtypes and shapes.
///
/// `node` names the node in errors.
pub fn infer(node: &str, op: &Op, inputs: &[(DType, &[usize])]) -> Result<Vec<(DType, Vec<usize>)>, IrError> {
    let _ = (node, op, inputs);
    Err(IrError::Shape { node: node.into(), op: op.name(), msg: "shape inference not implemented yet".into() })
}
