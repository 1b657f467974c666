//! Errors of plan loading, validation and execution.
use crate::device::DeviceError;
use crate::RuntimeError;
use tessera_ir::plan::PlanError;
use thiserror::Error;

/// Why a plan could not be loaded, validated or executed. Every message is one line and
/// names the thing at fault (file, input, rank, step, value).
#[derive(Debug, Error)]
pub enum ExecError {
    /// The plan file could not be read, or its source model or a weight file is missing or
    /// not the one the plan was compiled from.
    #[error(transparent)]
    PlanFile(#[from] PlanError),
    /// The verified source model's weights could not be opened.
    #[error(transparent)]
    Weights(#[from] RuntimeError),
    /// A plan built in memory was made for a newer Tessera.
    #[error("plan format_version {found} is newer than this runtime supports ({supported}); upgrade tessera-run")]
    FormatVersion {
        /// Version in the plan.
        found: u32,
        /// Newest version this runtime reads.
        supported: u32,
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
    /// The plan needs more memory than the cap ([`super::memory`]).
    #[error(
        "the plan needs {needed} bytes on its {ranks} devices at their peaks (rank {rank} peaks at {peak} bytes at step {step}, allocating tensor '{tensor}'), over the cap of {cap} bytes (set TESSERA_MAX_PLANNED_BYTES to change it; default: this machine's memory, or a lower ulimit -v or cgroup limit)"
    )]
    PlannedMemory {
        /// Bytes needed, all ranks together.
        needed: u64,
        /// The cap.
        cap: u64,
        /// Number of ranks.
        ranks: usize,
        /// The rank with the largest peak.
        rank: usize,
        /// Its peak bytes.
        peak: u64,
        /// The step at its peak.
        step: usize,
        /// The largest tensor that step allocates.
        tensor: String,
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
    /// The run was stopped before it finished (a session's caller cancelled it, e.g. Ctrl-C).
    #[error("run cancelled")]
    Cancelled,
    /// A rank thread panicked.
    #[error("rank {rank} panicked: {msg}")]
    Panic {
        /// Rank.
        rank: usize,
        /// Panic message.
        msg: String,
    },
}
