//! Compiling a model on the fly and opening a [`Session`] on a model or a plan.
//!
//! The runtime's [`Session`] is plan-based (the runtime never depends on the compiler);
//! this module, which sees both, adds what a program or the Python package needs on top:
//! [`compile`] imports and partitions a model in memory (as `tessera compile` does, without
//! writing the plan), [`CompiledPlan`] holds a plan with the place its source model is
//! recorded against (to verify the weights, save it, or describe it), and [`open_session`]
//! opens a session on a `.onnx` model (compiled first) or a plan file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_compiler::onnx::{ImportError, ImportOptions};
use tessera_compiler::partition::{
    mesh, partition, ObjectiveKind, PartitionError, PartitionOptions,
};
use tessera_compiler::report::plan_dot::{plan_to_dot, PlanDotOptions};
use tessera_compiler::report::{PlanReport, ReportError};
use tessera_ir::plan::{Plan, PlanError, SourceModel};
use tessera_ir::MAX_DEVICES;
use tessera_runtime::exec::validate::validate_plan;
use tessera_runtime::exec::ExecError;
use tessera_runtime::session::{Session, SessionOptions};
use tessera_runtime::weights::WeightStore;
use thiserror::Error;

/// Why a model could not be compiled or a session opened. Every message is one line and
/// names the file, option or tensor at fault.
#[derive(Debug, Error)]
pub enum ApiError {
    /// An option is out of range or contradicts another.
    #[error("{0}")]
    Options(String),
    /// The model could not be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The model could not be partitioned.
    #[error("partitioning '{model}': {source}")]
    Partition {
        /// The model.
        model: String,
        /// Why.
        source: PartitionError,
    },
    /// A plan file could not be read, written or verified.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The plan could not be described.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The plan could not be loaded or run.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Options of [`compile`] (the options of `tessera compile` a program needs most).
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Number of devices: of each data group when `data_groups` > 1 (`--mesh DxT`'s T).
    pub devices: usize,
    /// Data groups (`--mesh DxT`'s D; 1: plain tensor parallelism): the batch in `shapes`
    /// splits over them, each running the `devices`-device plan of its slice.
    pub data_groups: usize,
    /// Batch axis of an input, by name (None: every group gets it whole); default axis 0.
    pub batch_axes: BTreeMap<String, Option<usize>>,
    /// Static input shapes (fix dynamic dimensions), by input name.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Objective of the search.
    pub objective: ObjectiveKind,
    /// How long the search may take before it settles for the best plan found (`None`: no
    /// limit). Default: 10 s, as `tessera compile`.
    pub time_limit: Option<Duration>,
}

impl CompileOptions {
    /// Options for `devices` devices, every other option at `tessera compile`'s default.
    pub fn new(devices: usize) -> CompileOptions {
        CompileOptions {
            devices,
            data_groups: 1,
            batch_axes: BTreeMap::new(),
            shapes: BTreeMap::new(),
            objective: ObjectiveKind::default(),
            time_limit: Some(Duration::from_secs(10)),
        }
    }
}

/// A plan and the path its source model is recorded against: the plan file it was read
/// from or saved to, or (compiled in memory) a plan file beside the model that is never
/// written.
#[derive(Debug, Clone)]
pub struct CompiledPlan {
    plan: Plan,
    anchor: PathBuf,
}

/// Imports and partitions the ONNX model at `model` for `opts.devices` devices (in each of
/// `opts.data_groups` data groups), in memory.
/// The plan records the model's path and the sha256 of the model and its weight files, as
/// `tessera compile` does, so a session verifies them before it reads a weight.
pub fn compile(model: &Path, opts: &CompileOptions) -> Result<CompiledPlan, ApiError> {
    if opts.devices == 0 || opts.devices > MAX_DEVICES {
        return Err(ApiError::Options(format!(
            "devices={}: expected between 1 and {MAX_DEVICES}",
            opts.devices
        )));
    }
    let d = opts.data_groups;
    if d == 0 || d.checked_mul(opts.devices).is_none_or(|n| n > MAX_DEVICES) {
        return Err(ApiError::Options(format!(
            "data_groups={d} × devices={}: expected at least 1 group and at most {MAX_DEVICES} devices in all",
            opts.devices
        )));
    }
    let import_opts = ImportOptions {
        input_shapes: opts.shapes.clone(),
        ..Default::default()
    };
    let mesh::MeshImport {
        model: imported,
        data,
    } = mesh::import_for_mesh(model, &import_opts, d, opts.devices, &opts.batch_axes).map_err(
        |e| match e {
            mesh::MeshError::Import(e) => ApiError::Import(e),
            e => ApiError::Options(e.to_string()),
        },
    )?;
    let mut popts = PartitionOptions::new(opts.devices);
    popts.objective = opts.objective;
    popts.time_limit = opts.time_limit;
    let partitioned = partition(&imported.graph, &popts).map_err(|source| ApiError::Partition {
        model: model.display().to_string(),
        source,
    })?;
    let mut plan = partitioned.plan;
    if let Some((split, whole_shapes)) = data {
        plan = mesh::over_data_axis(plan, d, split, whole_shapes).map_err(|source| {
            ApiError::Partition {
                model: model.display().to_string(),
                source,
            }
        })?;
    }
    let name = model
        .file_name()
        .map_or_else(|| "model".into(), |f| f.to_string_lossy().into_owned());
    let anchor = tessera_ir::files::dir_of(model).join(format!("{name}.plan.json"));
    plan.source = SourceModel::record(model, &anchor, &plan.graph)?;
    Ok(CompiledPlan { plan, anchor })
}

impl CompiledPlan {
    /// Reads the plan file at `path` (format version first, see [`Plan::read`]) and checks
    /// its structure; its source model is verified when a session opens on it.
    pub fn open(path: &Path) -> Result<CompiledPlan, ApiError> {
        let plan = Plan::read(path)?;
        validate_plan(&plan)?;
        Ok(CompiledPlan {
            plan,
            anchor: path.to_path_buf(),
        })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Where the plan's source model is.
    pub fn model_path(&self) -> PathBuf {
        self.plan.resolve_source(&self.anchor, None)
    }

    /// Writes the plan to `path` (as `tessera compile -o` would: the model path recorded
    /// relative to it, the hashes recomputed, never over the model or a weight file); later
    /// uses of this plan resolve the model against `path`.
    pub fn save(&mut self, path: &Path) -> Result<(), ApiError> {
        let model = self.model_path();
        let mut plan = self.plan.clone();
        plan.source = SourceModel::record(&model, path, &plan.graph)?;
        plan.write(path)?;
        self.plan = plan;
        self.anchor = path.to_path_buf();
        Ok(())
    }

    /// The report `tessera inspect` prints for the plan.
    pub fn summary(&self) -> String {
        PlanReport::new(&self.plan, None).to_text()
    }

    /// Rank `rank`'s program as a DOT digraph (what `tessera dot` writes).
    pub fn to_dot(&self, rank: usize) -> Result<String, ApiError> {
        let opts = PlanDotOptions {
            rank,
            ..Default::default()
        };
        Ok(plan_to_dot(&self.plan, &opts)?)
    }

    /// Opens a session on the plan: verifies the source model and weight files against the
    /// plan's hashes, then starts the ranks ([`Session::new`]).
    pub fn session(&self, opts: &SessionOptions) -> Result<Session, ApiError> {
        let files = self.plan.verify_files(&self.anchor, None)?;
        let store = WeightStore::verified(&files);
        Ok(Session::new(self.plan.clone(), store, opts)?)
    }
}

/// Opens a session on `source`: an ONNX model (compiled first with `compile`), or a plan file
/// (any other file; `compile.devices`, when not zero, must match the plan's device count).
pub fn open_session(
    source: &Path,
    compile_opts: &CompileOptions,
    opts: &SessionOptions,
) -> Result<Session, ApiError> {
    let plan = if is_onnx(source) {
        compile(source, compile_opts)?
    } else {
        let plan = CompiledPlan::open(source)?;
        let n = plan.plan.ranks.len();
        if compile_opts.devices != 0 && compile_opts.devices != n {
            return Err(ApiError::Options(format!(
                "devices={}: plan '{}' was compiled for {n} devices",
                compile_opts.devices,
                source.display()
            )));
        }
        plan
    };
    plan.session(opts)
}

/// True for a path ending in `.onnx` (any case), the files `tessera compile` reads.
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
