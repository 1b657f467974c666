//! The partitioned plan: what `tessera compile` writes and `tessera-run` executes.
//!
//! A plan is versioned JSON ([`FORMAT_VERSION`]). It carries the logical graph (weights by
//! reference, never their bytes), the layout chosen for every logical tensor, one op list per
//! rank over rank-local values, the collectives, per-rank estimates and search statistics.
//! Timings are deliberately not part of the plan, so that the same input gives a
//! byte-identical plan; `tessera compile` writes them beside it (see [`Timings`]).
use crate::{DType, Graph, Layout, NodeId, Op, TensorId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod file;
mod finite;
mod mesh;
mod search;

pub use file::{sha256_file, FileRole, PlanError, VerifiedFiles};
pub use mesh::{DataSplit, Mesh};
pub use search::{Extractor, Objective, ObjectiveKind, SearchLimits, SearchStats, StopReason};

/// Current plan format version. [`Plan::read`] refuses plans with another version: newer
/// ones need a newer Tessera, older ones (version 1 recorded no weight-file hashes) need a
/// recompile.
///
/// Version 2: `source.weight_files`; search stop reason, limits and extractor as typed
/// values; non-finite floats of inline tensors encoded as strings.
///
/// Version 3: quantised weights (`Weight::quant`: int8/uint8 bytes with a scale and zero
/// point, whose files are hashed too); a version-2 runtime would ignore `quant`.
///
/// Version 4: ragged splits — [`PlanValue::rank_shapes`] (per-rank shapes where a split axis
/// does not divide evenly) and per-member extents of collectives (`counts`); a version-3
/// runtime would assume equal chunks.
pub const FORMAT_VERSION: u32 = 4;

/// The source model a plan was compiled from. The default (nothing recorded, as in a plan
/// fresh from the partitioner) fails [`Plan::verify`] until [`SourceModel::record`] fills it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceModel {
    /// Path of the ONNX file as given to the compiler (absolute or relative to the plan's
    /// directory).
    pub path: String,
    /// sha256 of the ONNX file, lowercase hex.
    pub sha256: String,
    /// sha256 (lowercase hex) of every file weights are read from (the ONNX file itself for
    /// `raw_data` initializers, external-data files), keyed by the path the weights give
    /// (relative to the model's directory unless absolute). [`Plan::verify`] checks each.
    pub weight_files: BTreeMap<String, String>,
}

/// Alpha-beta communication cost model plus a compute rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// Preset name (`nvlink`, `pcie`, `ethernet`, `cpu`) or `custom`.
    pub name: String,
    /// Per-collective latency in seconds.
    pub alpha_s: f64,
    /// Link bandwidth in bytes per second.
    pub beta_bytes_per_s: f64,
    /// Per-device compute rate in FLOP/s (GEMMs of a class without a measured rate, and
    /// every other op's FLOPs).
    pub flops_per_s: f64,
    /// Measured refinements (`tessera calibrate`); empty in presets and old files.
    #[serde(default, skip_serializing_if = "Calibration::is_empty")]
    pub calibration: Calibration,
    /// Latency and bandwidth of the links between the data groups of a 2-D mesh (the
    /// network between machines), where `alpha_s` / `beta_bytes_per_s` are the links inside
    /// a group (NVLink inside a machine); None: the same links everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_group: Option<LinkFit>,
}

/// A measured latency and bandwidth: `alpha_s + ring_bytes / beta_bytes_per_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkFit {
    /// Latency in seconds.
    pub alpha_s: f64,
    /// Bandwidth in ring bytes per second.
    pub beta_bytes_per_s: f64,
}

/// Shape classes of a GEMM `M×K · K×N` (batch folded into M), by which calibrated
/// throughput is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmClass {
    /// `min(M, N, K) <= 16` (matrix-vector-like).
    Skinny,
    /// `M·N·K < 2^21`.
    Small,
    /// `2^21 <= M·N·K < 2^27`.
    Medium,
    /// `M·N·K >= 2^27`.
    Large,
}

impl GemmClass {
    /// Every class, in table order.
    pub const ALL: [GemmClass; 4] = [
        GemmClass::Skinny,
        GemmClass::Small,
        GemmClass::Medium,
        GemmClass::Large,
    ];

    /// The class of a GEMM of sizes `m`, `n`, `k`.
    pub fn of(m: usize, n: usize, k: usize) -> GemmClass {
        let mnk = (m as u128) * (n as u128) * (k as u128);
        if m.min(n).min(k) <= 16 {
            GemmClass::Skinny
        } else if mnk < 1 << 21 {
            GemmClass::Small
        } else if mnk < 1 << 27 {
            GemmClass::Medium
        } else {
            GemmClass::Large
        }
    }

    /// snake_case name, as in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            GemmClass::Skinny => "skinny",
            GemmClass::Small => "small",
            GemmClass::Medium => "medium",
            GemmClass::Large => "large",
        }
    }
}

/// Measured refinements of a [`CostModel`]; what is absent falls back to the base numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Latency and bandwidth per collective kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collectives: BTreeMap<CollectiveKind, LinkFit>,
    /// GEMM throughput (FLOP/s) per shape class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gemm_flops_per_s: BTreeMap<GemmClass, f64>,
    /// Bandwidth (bytes read + written per second) of memory-bound ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes_per_s: Option<f64>,
    /// Fixed cost of launching one op, in seconds.
    #[serde(default)]
    pub op_overhead_s: f64,
}

impl Calibration {
    /// True when nothing was measured.
    pub fn is_empty(&self) -> bool {
        self == &Calibration::default()
    }
}

/// Id of a rank-local value of a plan (index into [`Plan::values`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub u32);

impl ValueId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A rank-local value: a logical tensor held in some layout. Its local shape is `shape` on
/// every rank, unless a ragged split (an axis that does not divide into equal chunks, see
/// [`crate::split_bounds`]) gives each rank its own: then `rank_shapes[r]` is rank `r`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanValue {
    /// The logical tensor it holds (a piece of).
    pub tensor: TensorId,
    /// Its layout.
    pub layout: Layout,
    /// Local shape on each rank (rank 0's, the largest, when `rank_shapes` is set).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Per-rank local shapes of a ragged split, one per rank of the tensor-parallel axis
    /// (every data group of a `[D, T]` mesh runs the same T programs); empty when every rank
    /// holds `shape`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rank_shapes: Vec<Vec<usize>>,
}

impl PlanValue {
    /// The local shape on `rank` (of the whole mesh: rank `g·T + t` holds rank `t`'s).
    pub fn shape_on(&self, rank: usize) -> &[usize] {
        match self.rank_shapes.len() {
            0 => &self.shape,
            t => &self.rank_shapes[rank % t],
        }
    }
}

/// A contiguous range of one axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxisSlice {
    /// Axis.
    pub axis: usize,
    /// First index.
    pub start: usize,
    /// One past the last index.
    pub end: usize,
}

/// Collective kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    /// Partial → Replicated.
    AllReduce,
    /// Split(axis) → Replicated.
    AllGather,
    /// Partial → Split(axis).
    ReduceScatter,
    /// Split(a) → Split(b).
    AllToAll,
    /// Root's Replicated → everyone.
    Broadcast,
}

impl CollectiveKind {
    /// snake_case name as used in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all_reduce",
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::ReduceScatter => "reduce_scatter",
            CollectiveKind::AllToAll => "all_to_all",
            CollectiveKind::Broadcast => "broadcast",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Materialise a weight, or this rank's slice of it (no inputs).
    LoadWeight {
        /// The weight tensor of the logical graph.
        tensor: TensorId,
        /// This rank's slice, or None for the whole weight.
        slice: Option<AxisSlice>,
    },
    /// Bind a graph input, or this rank's slice of it (no inputs).
    Input {
        /// The input tensor of the logical graph.
        tensor: TensorId,
        /// This rank's slice, or None for the whole input.
        slice: Option<AxisSlice>,
    },
    /// Run an op locally. The op's attributes are rank-local (e.g. Reshape targets use
    /// local extents).
    Compute {
        /// The logical node this computes (a local form of).
        node: NodeId,
        /// The local op.
        op: Op,
    },
    /// Vocab-parallel gather: this rank holds rows `[offset, offset + rows)` of the table
    /// along axis 0; indices outside give zeros. Output is Partial. Inputs: table, indices.
    ShardedGather {
        /// The logical Gather node.
        node: NodeId,
        /// First row held by this rank.
        offset: usize,
        /// Rows held.
        rows: usize,
    },
    /// Replicated → Split: keep this rank's chunk (free, no communication).
    LocalSlice {
        /// This rank's range.
        slice: AxisSlice,
    },
    /// Divide a replicated value by N so it can join a Partial sum (one input).
    ScaleToPartial {
        /// Number of devices.
        n: usize,
    },
    /// A collective over `group`.
    Collective {
        /// Which collective.
        collective: CollectiveKind,
        /// Split axis of the input (all-to-all, all-gather) or output (reduce-scatter).
        axis: Option<usize>,
        /// Output split axis of an all-to-all.
        to_axis: Option<usize>,
        /// Participating ranks.
        group: Vec<usize>,
        /// Logical size in bytes of the tensor moved.
        bytes: u64,
        /// For a ragged split: each member's extent of the split axis (all-gather's input
        /// `axis`, reduce-scatter's output `axis`, all-to-all's `to_axis`); empty for equal
        /// chunks.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        counts: Vec<usize>,
    },
}

/// One step of a rank's program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What it does.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Input values.
    pub inputs: Vec<ValueId>,
    /// Output values.
    pub outputs: Vec<ValueId>,
    /// Repeated-block index of the node this step belongs to, when layers were found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
}

/// The program of one rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankProgram {
    /// Rank index.
    pub rank: usize,
    /// Steps in execution order.
    pub steps: Vec<Step>,
}

/// One collective of the plan (same on every rank).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveInfo {
    /// Which collective.
    pub kind: CollectiveKind,
    /// Logical tensor moved.
    pub tensor: TensorId,
    /// Its name.
    pub tensor_name: String,
    /// Logical size in bytes.
    pub bytes: u64,
    /// Participating ranks.
    pub group: Vec<usize>,
    /// Layer index, when layers were found.
    pub layer: Option<u32>,
}

/// A weight split across ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightShard {
    /// The weight tensor.
    pub tensor: TensorId,
    /// Initializer name.
    pub name: String,
    /// Split axis.
    pub axis: usize,
    /// Range held by each rank, by rank.
    pub ranges: Vec<(usize, usize)>,
}

/// Estimated resources of one rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankEstimate {
    /// Rank.
    pub rank: usize,
    /// Bytes of weights held.
    pub param_bytes: u64,
    /// Peak bytes of live activations (buffers freed at last use).
    pub peak_activation_bytes: u64,
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes sent by this rank (ring volumes).
    pub comm_bytes: u64,
    /// Modelled seconds of this rank's program under the plan's cost model (compute plus
    /// collectives); 0 in plans written before it was recorded.
    #[serde(default)]
    pub model_s: f64,
}

/// Repeated blocks found in the graph, or a chain of blocks that differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Number of blocks (over every stack).
    pub count: usize,
    /// Nodes in each block (of the last stack, where there are several; the largest block
    /// where they differ).
    pub nodes_per_layer: usize,
    /// The blocks differ: the graph has no repeated layers, and the search cut it into a
    /// chain of blocks where one tensor (the residual stream) crosses, apart from tensors
    /// computed before the first block. Each block is solved on its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocks_differ: bool,
    /// Layer index of each logical node (None outside the blocks), by node.
    pub node_layer: Vec<Option<u32>>,
    /// The stacks of layers in graph order (an encoder's, then a decoder's), where the graph
    /// has more than one; empty for one stack (plans written before stacks were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<LayerStack>,
}

/// One stack of repeated layers: layers `first .. first + count` of [`LayerInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStack {
    /// Index of its first layer.
    pub first: u32,
    /// Its layers.
    pub count: usize,
    /// Nodes in each of its blocks.
    pub nodes_per_layer: usize,
}

impl LayerInfo {
    /// The stacks (one covering every layer where none are recorded).
    pub fn stack_list(&self) -> Vec<LayerStack> {
        if self.stacks.is_empty() {
            vec![LayerStack {
                first: 0,
                count: self.count,
                nodes_per_layer: self.nodes_per_layer,
            }]
        } else {
            self.stacks.clone()
        }
    }
}

/// Totals of the plan, for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Collective count and bytes by kind.
    pub collectives: BTreeMap<String, (u64, u64)>,
    /// The 1-D tensor-parallel lower bound on communicated bytes (see the compiler docs).
    pub lower_bound_bytes: u64,
    /// How many MatMul-like nodes were column-split, row-split, replicated, other.
    pub matmul_choices: BTreeMap<String, u64>,
    /// Notes from the search (e.g. why a dim could not be split).
    pub notes: Vec<String>,
}

/// A partitioned plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Plan format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Source model.
    pub source: SourceModel,
    /// Static input shapes used (of the whole batch, on a 2-D mesh).
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Device mesh.
    pub mesh: Mesh,
    /// How the inputs split over the data groups of a `[D, T]` mesh and the outputs gather
    /// (None on a 1-D mesh). Then [`Plan::input_shapes`] are the whole batch's shapes and
    /// [`Plan::graph`] is one group's graph, at batch B / D.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSplit>,
    /// Cost model.
    pub cost_model: CostModel,
    /// Objective and budget.
    pub objective: Objective,
    /// The logical graph (weights by reference).
    pub graph: Graph,
    /// Layout chosen for each logical tensor, by tensor id (None for tensors not computed).
    pub layouts: Vec<Option<Layout>>,
    /// Rank-local values.
    pub values: Vec<PlanValue>,
    /// Plan outputs (Replicated values), in graph output order.
    pub outputs: Vec<ValueId>,
    /// One program per rank.
    pub ranks: Vec<RankProgram>,
    /// All collectives, in program order.
    pub collectives: Vec<CollectiveInfo>,
    /// Split weights.
    pub weight_shards: Vec<WeightShard>,
    /// Estimates per rank.
    pub estimates: Vec<RankEstimate>,
    /// Repeated blocks, if found.
    pub layers: Option<LayerInfo>,
    /// Search statistics.
    pub search: SearchStats,
    /// Totals for reports.
    pub summary: PlanSummary,
}

/// Wall-clock timings of a compile, written beside the plan as `<plan>.timings.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Whole compile, import included, in milliseconds.
    pub compile_ms: f64,
    /// Import (parse, fold, infer), in milliseconds.
    pub import_ms: f64,
    /// E-graph saturation, in milliseconds.
    pub saturate_ms: f64,
    /// Extraction, in milliseconds.
    pub extract_ms: f64,
}

impl Plan {
    /// A short one-line description of a step for messages, e.g. `compute MatMul 'fc1'`,
    /// `load_weight 'fc1.weight'`, `all_reduce`. Ids out of range read as `?`, so it is safe
    /// on a plan that was not validated.
    pub fn describe_step(&self, step: &Step) -> String {
        let tensor = |t: &TensorId| {
            self.graph
                .tensors
                .get(t.index())
                .map_or("?", |t| t.name.as_str())
        };
        let node = |n: &NodeId| {
            self.graph
                .nodes
                .get(n.index())
                .map_or("?", |n| n.name.as_str())
        };
        match &step.kind {
            StepKind::LoadWeight { tensor: t, .. } => format!("load_weight '{}'", tensor(t)),
            StepKind::Input { tensor: t, .. } => format!("input '{}'", tensor(t)),
            StepKind::Compute { node: n, op } => format!("compute {} '{}'", op.name(), node(n)),
            StepKind::ShardedGather { node: n, .. } => format!("sharded_gather '{}'", node(n)),
            StepKind::LocalSlice { .. } => "local_slice".into(),
            StepKind::ScaleToPartial { .. } => "scale_to_partial".into(),
            StepKind::Collective { collective, .. } => collective.as_str().into(),
        }
    }
}
