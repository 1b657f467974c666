//! Human-readable views of graphs and plans: DOT drawings, `inspect` summaries.
//!
//! * [`graph_dot`]: the logical graph as DOT (op and output shape on each node),
//! * [`plan_dot`]: one rank's program of a plan as DOT, collectives as distinct nodes,
//!   edges labelled with local shape and layout, repeated layers collapsed,
//! * [`model_summary`]: what `tessera inspect MODEL.onnx` prints,
//! * [`summary`]: the numbers `tessera inspect PLAN.json` prints (and its `--json` object),
//! * [`mesh`]: the data groups of a 2-D mesh and what crosses the data axis,
//! * [`megatron`]: the collectives of a Megatron-style hand plan, the yardstick of `inspect`,
//! * [`graphviz`]: rendering DOT to SVG through Graphviz's `dot` binary.
//!
//! Everything here is pure library code over [`tessera_ir`] types; the CLI only parses
//! arguments and prints.

pub mod format;
pub mod graph_dot;
pub mod graphviz;
mod layer_view;
pub mod megatron;
pub mod mesh;
pub mod model_summary;
pub mod plan_dot;
pub mod summary;
mod summary_text;

#[cfg(test)]
mod fixtures;

pub use graph_dot::graph_to_dot;
pub use graphviz::{graphviz_available, render_svg};
pub use model_summary::model_summary_text;
pub use plan_dot::{plan_to_dot, LayerRange, PlanDotOptions};
pub use summary::PlanReport;

use thiserror::Error;

/// Errors of the report functions.
#[derive(Debug, Error)]
pub enum ReportError {
    /// `--rank` is not a rank of the plan.
    #[error("rank {rank} is not in the plan: it has {devices} ranks (0..{devices})")]
    UnknownRank {
        /// Rank asked for.
        rank: usize,
        /// Ranks of the plan.
        devices: usize,
    },
    /// A layer range that is malformed or outside the plan's layers.
    #[error("layer range '{range}': {msg}")]
    BadLayerRange {
        /// The range as given.
        range: String,
        /// What is wrong.
        msg: String,
    },
    /// The plan refers to a value, tensor or node that does not exist.
    #[error("inconsistent plan: {0}")]
    InconsistentPlan(String),
    /// Graphviz's `dot` binary is not installed.
    #[error(
        "Graphviz 'dot' not found: install it with `apt-get install graphviz` or use --format dot"
    )]
    GraphvizMissing,
    /// Graphviz ran but failed.
    #[error("Graphviz 'dot' failed: {0}")]
    GraphvizFailed(String),
}
