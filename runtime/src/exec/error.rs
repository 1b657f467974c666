//! Errors of plan loading, validation and execution.
use crate::device::DeviceError;
use std::path::PathBuf;
use thiserror::Error;

/// Why a plan could not be loaded, validated or executed. Every message is one line and
/// names the thing at fault (file, input, rank, step, value).
#[derive(Debug, Error)]
pub enum ExecError {
    /// The plan file could not be read or parsed (serde's line/column included).
    #[error("plan {}: {msg}", path.display())]
    PlanFile {
        /// Plan file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// The plan was written by a newer Tessera.
    #[error("plan format_version {found} is newer than this runtime supports ({supported}); upgrade tessera-run")]
    FormatVersion {
        /// Version in the plan.
        found: u32,
        /// Newest version this runtime reads.
        supported: u32,
    },
    /// The plan's source model cannot be found.
    #[error("source model {} not found ({msg})", path.display())]
    SourceMissing {
        /// Resolved path.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// The source model is not the one the plan was compiled from.
    #[error("source model {} has sha256 {actual} but the plan was compiled from sha256 {expected}", path.display())]
    ShaMismatch {
        /// Resolved path.
        path: PathBuf,
        /// sha256 recorded in the plan.
        expected: String,
        /// sha256 of the file on disk.
        actual: String,
    },
    /// The plan is structurally invalid (ids out of range, values used before definition, ...).
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// An input is missing, unknown, or has the wrong dtype or shape.
    #[error("input '{name}': {msg}")]
    Input {
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// A step failed on a rank.
    #[error("rank {rank} step {step} ({what}): {msg}")]
    Step {
        /// Rank.
        rank: usize,
        /// Step index in the rank's program.
        step: usize,
        /// Step kind and node, e.g. `compute MatMul 'fc1'`.
        what: String,
        /// What went wrong.
        msg: String,
    },
    /// The backend could not start.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A rank thread panicked.
    #[error("rank {rank} panicked: {msg}")]
    Panic {
        /// Rank.
        rank: usize,
        /// Panic message.
        msg: String,
    },
}
