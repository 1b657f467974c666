//! Attribute structs of the selection and scatter ops ([`crate::Op::TopK`],
//! [`crate::Op::ScatterElements`], [`crate::Op::ScatterNd`]), re-exported by [`crate::op`]
//! (kept in their own file so that `op.rs` stays readable).
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

/// How a scatter combines an update with the element it lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScatterReduction {
    /// The update replaces the element (the last update wins on duplicate indices).
    None,
    /// element + update.
    Add,
    /// element · update.
    Mul,
    /// max(element, update) (NaN propagates).
    Max,
    /// min(element, update) (NaN propagates).
    Min,
}

/// ScatterElements attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScatterElementsAttrs {
    /// The axis the indices address (non-negative).
    pub axis: usize,
    /// How updates combine with the data.
    pub reduction: ScatterReduction,
}

/// ScatterND attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScatterNdAttrs {
    /// How updates combine with the data.
    pub reduction: ScatterReduction,
}
