//! Attribute structs of the selection ops ([`crate::Op::TopK`]), re-exported by
//! [`crate::op`] (kept in their own file so that `op.rs` stays readable).
use serde::{Deserialize, Serialize};

/// TopK attributes (`k` resolved at import: the runtime's shapes are static).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKAttrs {
    /// The axis selected along (non-negative).
    pub axis: usize,
    /// How many elements to keep (at most the axis' extent).
    pub k: usize,
    /// The largest elements (else the smallest).
    pub largest: bool,
}
