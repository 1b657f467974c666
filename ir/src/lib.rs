//! Tessera IR: the typed graph every other crate works on.
//!
//! * [`DType`] and static [`Shape`]s,
//! * a closed [`Op`] enum with one attribute struct per op ([`op`]),
//! * [`Graph`]: tensors and nodes behind our own ids ([`TensorId`], [`NodeId`]),
//! * [`Weight`]: metadata plus a lazy reference to the bytes (never read by the compiler),
//! * [`Tensor`]: a host tensor used by constant folding and the CPU executors,
//! * [`Layout`]: how a tensor is laid out over the devices of a mesh,
//! * [`spec`]: one spec per op family (arity, inference, FLOPs and bytes, partitioning),
//! * [`plan`]: the partitioned plan format written by `tessera compile`.
//! * [`einsum`]: the split of an einsum equation into its terms (import and kernels).
#![warn(missing_docs)]

pub mod dtype;
pub mod einsum;
pub mod error;
pub mod files;
pub mod graph;
pub mod infer;
pub mod layout;
mod nonfinite;
pub mod op;
mod op_more;
pub mod plan;
pub mod size;
pub mod spec;
pub mod tensor;
pub mod weight;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{Graph, Node, NodeId, TensorId, TensorInfo, TensorKind};
pub use layout::{split_bounds, Layout};
pub use op::Op;
pub use size::{
    check_tensor_size, checked_bytes, checked_numel, SizeError, MAX_DEVICES, MAX_TENSOR_BYTES,
};
pub use tensor::{Tensor, TensorData};
pub use weight::{Quant, Weight, WeightData};

/// A static shape: one extent per axis.
pub type Shape = Vec<usize>;

/// Number of elements of a shape (1 for a scalar; 0 when any dim is 0). Saturates at
/// `usize::MAX` instead of wrapping; shapes from outside (models, plans, flags) are checked
/// with [`checked_numel`] / [`check_tensor_size`] before use.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}
