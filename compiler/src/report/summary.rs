//! The numbers `tessera inspect PLAN.json` reports, as one serialisable struct.
//!
//! Everything is recomputed from the plan's own records (collectives, estimates, layouts,
//! search statistics) so that the report and the plan cannot disagree; wall-clock timings
//! come from the `PLAN.timings.json` sidecar when one is given.
use super::format::joined;
use serde::Serialize;
use std::collections::BTreeMap;
use tessera_ir::plan::{
    CollectiveKind, Extractor, ObjectiveKind, Plan, SearchLimits, Step, StepKind, StopReason,
    Timings, ValueId,
};
use tessera_ir::{Layout, Op};

/// The collective kinds always present in [`PlanReport::totals`], even with a zero count.
pub const REPORTED_KINDS: [CollectiveKind; 4] = [
    CollectiveKind::AllReduce,
    CollectiveKind::AllGather,
    CollectiveKind::ReduceScatter,
    CollectiveKind::AllToAll,
];

/// How many collectives of one kind, and the bytes of the tensors they move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CollectiveTotal {
    /// Number of collectives.
    pub count: u64,
    /// Sum of the logical sizes of the tensors moved.
    pub bytes: u64,
}

/// Collectives of one layer (or of the part of the graph outside the layers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCollectives {
    /// Layer index, or None for steps outside the repeated blocks.
    pub layer: Option<u32>,
    /// Count and bytes by collective kind (`all_reduce`, ...), kinds present only.
    pub by_kind: BTreeMap<String, CollectiveTotal>,
    /// Total bytes of this layer's collectives.
    pub bytes: u64,
}

/// Estimated resources of one rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankRow {
    /// Rank.
    pub rank: usize,
    /// Bytes of weights it holds.
    pub param_bytes: u64,
    /// Peak bytes of live activations.
    pub peak_activation_bytes: u64,
    /// Floating-point operations.
    pub flops: u64,
}

/// Search statistics plus the extraction time from the timings sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRow {
    /// E-classes at the end of saturation.
    pub eclasses: usize,
    /// E-nodes at the end of saturation.
    pub enodes: usize,
    /// Runner iterations.
    pub iterations: usize,
    /// Why the runner stopped.
    pub stop_reason: StopReason,
    /// Limits of each runner.
    pub limits: SearchLimits,
    /// Extraction time in milliseconds (from the timings sidecar), if known.
    pub extract_ms: Option<f64>,
    /// Relative gap between the chosen plan's cost and the proven lower bound.
    pub gap: f64,
    /// Extractor used.
    pub extractor: Extractor,
    /// Cost of the chosen plan (model seconds).
    pub cost: f64,
    /// Proven lower bound on the cost (model seconds).
    pub lower_bound: f64,
}

/// Everything `tessera inspect PLAN.json` shows; serialises to the `--json` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// Source model path as recorded in the plan.
    pub source: String,
    /// Number of devices.
    pub devices: usize,
    /// Mesh extents.
    pub mesh: Vec<usize>,
    /// The data groups (one on a 1-D mesh): ranks, collectives, memory and FLOPs of each.
    pub groups: Vec<super::mesh::GroupRow>,
    /// What the data axis of a `[D, T]` mesh splits and moves (None on a 1-D mesh).
    pub data_axis: Option<super::mesh::DataAxisRow>,
    /// Cost-model name.
    pub cost_model: String,
    /// Objective kind.
    pub objective: ObjectiveKind,
    /// Number of repeated blocks found, or None.
    pub layers: Option<usize>,
    /// The blocks differ: a chain cut where one tensor crosses, not repeated layers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub layers_differ: bool,
    /// Logical nodes of the graph.
    pub nodes: usize,
    /// Steps of each rank's program, by rank.
    pub steps_per_rank: Vec<usize>,
    /// Count and bytes by collective kind, of one data group (all ranks on a 1-D mesh);
    /// always has `all_reduce`, `all_gather`,
    /// `reduce_scatter` and `all_to_all` (and `broadcast` when the plan has some).
    pub totals: BTreeMap<String, CollectiveTotal>,
    /// Bytes of all collectives together.
    pub total_bytes: u64,
    /// The 1-D tensor-parallel lower bound on communicated bytes.
    pub lower_bound_bytes: u64,
    /// Collectives per layer (layer None = outside the repeated blocks), in layer order.
    pub per_layer: Vec<LayerCollectives>,
    /// Estimates per rank.
    pub per_rank: Vec<RankRow>,
    /// Search statistics.
    pub search: SearchRow,
    /// Whole compile time in milliseconds (from the timings sidecar), if known.
    pub compile_ms: Option<f64>,
    /// MatMul-like choices as recorded by the partitioner (`column_split`, `row_split`, ...).
    pub matmul_choices: BTreeMap<String, u64>,
    /// For each op kind, how many nodes ran with each layout signature
    /// (`"R,S(1) -> S(1)"`: input layouts, then output layouts).
    pub op_choices: BTreeMap<String, BTreeMap<String, u64>>,
    /// Notes from the search.
    pub notes: Vec<String>,
    /// What a Megatron-style hand plan of the same model would communicate (with at least
    /// 2 repeated layers found).
    pub megatron: Option<super::megatron::MegatronReference>,
}

impl PlanReport {
    /// Computes the report of `plan`; `timings` is the plan's sidecar, when found.
    pub fn new(plan: &Plan, timings: Option<&Timings>) -> PlanReport {
        let mut totals: BTreeMap<String, CollectiveTotal> = REPORTED_KINDS
            .iter()
            .map(|k| (k.as_str().to_string(), CollectiveTotal::default()))
            .collect();
        let mut by_layer: BTreeMap<Option<u32>, BTreeMap<String, CollectiveTotal>> =
            BTreeMap::new();
        // One data group's collectives: every group runs the same on its own ranks.
        let in_group_0 = |c: &&tessera_ir::plan::CollectiveInfo| {
            c.group.iter().all(|&m| plan.mesh.group_of(m) == 0)
        };
        for c in plan.collectives.iter().filter(in_group_0) {
            for map in [&mut totals, by_layer.entry(c.layer).or_default()] {
                let t = map.entry(c.kind.as_str().to_string()).or_default();
                t.count += 1;
                t.bytes += c.bytes;
            }
        }
        let per_layer = by_layer
            .into_iter()
            .map(|(layer, by_kind)| {
                let bytes = by_kind.values().map(|t| t.bytes).sum();
                LayerCollectives {
                    layer,
                    by_kind,
                    bytes,
                }
            })
            .collect();
        PlanReport {
            source: plan.source.path.clone(),
            devices: plan.mesh.devices(),
            mesh: plan.mesh.shape.clone(),
            groups: super::mesh::group_rows(plan),
            data_axis: super::mesh::data_axis(plan),
            cost_model: plan.cost_model.name.clone(),
            objective: plan.objective.kind,
            layers: plan.layers.as_ref().map(|l| l.count),
            layers_differ: plan.layers.as_ref().is_some_and(|l| l.blocks_differ),
            nodes: plan.graph.nodes.len(),
            steps_per_rank: plan.ranks.iter().map(|r| r.steps.len()).collect(),
            total_bytes: totals.values().map(|t| t.bytes).sum(),
            totals,
            lower_bound_bytes: plan.summary.lower_bound_bytes,
            per_layer,
            per_rank: plan
                .estimates
                .iter()
                .map(|e| RankRow {
                    rank: e.rank,
                    param_bytes: e.param_bytes,
                    peak_activation_bytes: e.peak_activation_bytes,
                    flops: e.flops,
                })
                .collect(),
            search: SearchRow {
                eclasses: plan.search.eclasses,
                enodes: plan.search.enodes,
                iterations: plan.search.iterations,
                stop_reason: plan.search.stop_reason.clone(),
                limits: plan.search.limits,
                extract_ms: timings.map(|t| t.extract_ms),
                gap: plan.search.gap,
                extractor: plan.search.extractor,
                cost: plan.search.cost,
                lower_bound: plan.search.lower_bound,
            },
            compile_ms: timings.map(|t| t.compile_ms),
            matmul_choices: plan.summary.matmul_choices.clone(),
            op_choices: op_choices(plan),
            notes: plan.summary.notes.clone(),
            megatron: super::megatron::megatron_reference(plan),
        }
    }

    /// How many collectives of `kind` (`"all_reduce"`, ...) each layer has, in one line that
    /// stays short for deep models: `2 in each of 96 layers + 1 outside layers`, or a list
    /// (`layer 0: 2, layer 1: 3`) when layers differ.
    pub fn per_layer_line(&self, kind: &str) -> String {
        let count_of = |l: &LayerCollectives| l.by_kind.get(kind).map_or(0, |t| t.count);
        let outside: u64 = self
            .per_layer
            .iter()
            .filter(|l| l.layer.is_none())
            .map(count_of)
            .sum();
        let layers = self.layers.unwrap_or(0);
        let mut counts = vec![0u64; layers];
        for l in &self.per_layer {
            if let Some(c) = l.layer.and_then(|i| counts.get_mut(i as usize)) {
                *c += count_of(l);
            }
        }
        let mut parts = Vec::new();
        match counts.first() {
            None => {}
            Some(&first) if counts.iter().all(|&c| c == first) => {
                parts.push(format!("{first} in each of {layers} layers"));
            }
            Some(_) => parts.push(joined(
                counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("layer {i}: {c}")),
                ", ",
            )),
        }
        if layers == 0 {
            parts.push(format!("{outside} (no repeated layers found)"));
        } else {
            parts.push(format!("{outside} outside layers"));
        }
        parts.join(" + ")
    }

    /// The report as a human-readable table (what `tessera inspect PLAN.json` prints).
    pub fn to_text(&self) -> String {
        super::summary_text::render(self)
    }
}

/// Layout signature of every computed node on rank 0 (every rank runs the same ops),
/// grouped by op name. Signatures read the values the step really consumes, so an op
/// after an all-reduce shows `R`, not the producer's `P`.
fn op_choices(plan: &Plan) -> BTreeMap<String, BTreeMap<String, u64>> {
    let layout_of = |v: &ValueId| -> String {
        plan.values
            .get(v.index())
            .map_or("?".into(), |v| v.layout.to_string())
    };
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let Some(program) = plan.ranks.first() else {
        return out;
    };
    for step in &program.steps {
        let op_name = match &step.kind {
            StepKind::Compute { op, .. } => op.name(),
            StepKind::ShardedGather { .. } => "Gather".to_string(),
            _ => continue,
        };
        let ins: Vec<String> = step.inputs.iter().map(layout_of).collect();
        let outs: Vec<String> = step.outputs.iter().map(layout_of).collect();
        let mut signature = format!("{} -> {}", ins.join(","), outs.join(","));
        let matmul_like = matches!(
            &step.kind,
            StepKind::Compute {
                op: Op::MatMul(_) | Op::Gemm(_) | Op::Einsum(_),
                ..
            }
        );
        if let (true, Some(strategy)) = (matmul_like, matmul_strategy(plan, step)) {
            signature = format!("{signature} ({strategy})");
        }
        *out.entry(op_name)
            .or_default()
            .entry(signature)
            .or_default() += 1;
    }
    out
}

/// Names the Megatron strategy of a matmul-like step from its output: `row-split` (output
/// partial), `column-split` (output split on its last axis), `batch-split` (split on another
/// axis), `replicated`.
fn matmul_strategy(plan: &Plan, step: &Step) -> Option<&'static str> {
    let out = plan.values.get(step.outputs.first()?.index())?;
    let rank = out.shape.len();
    Some(match out.layout {
        Layout::Partial => "row-split",
        Layout::Split(a) if a + 1 == rank => "column-split",
        Layout::Split(_) => "batch-split",
        Layout::Block(_) => "kv-block",
        Layout::Replicated => "replicated",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::mlp_stack_plan;

    #[test]
    fn totals_count_every_collective_once() {
        let plan = mlp_stack_plan(3, 2);
        let r = PlanReport::new(&plan, None);
        assert_eq!(r.devices, 2);
        assert_eq!(r.layers, Some(3));
        assert_eq!(
            r.totals["all_reduce"],
            CollectiveTotal {
                count: 3,
                bytes: 3 * 4 * 64 * 4
            }
        );
        assert_eq!(r.totals["all_gather"], CollectiveTotal::default());
        assert_eq!(r.totals.len(), 4);
        assert_eq!(r.total_bytes, 3072);
        assert_eq!(r.per_layer.len(), 3);
        assert!(r
            .per_layer
            .iter()
            .all(|l| l.bytes == 1024 && l.by_kind["all_reduce"].count == 1));
        assert_eq!(r.per_rank.len(), 2);
        assert_eq!(r.per_rank[1].param_bytes, 3 * 64 * 256 * 4);
        assert_eq!(r.search.extract_ms, None);
        assert_eq!(r.compile_ms, None);
    }

    #[test]
    fn per_layer_line_stays_short_for_uniform_layers() {
        let r = PlanReport::new(&mlp_stack_plan(96, 2), None);
        assert_eq!(
            r.per_layer_line("all_reduce"),
            "1 in each of 96 layers + 0 outside layers"
        );
        let r = PlanReport::new(&mlp_stack_plan(1, 2), None);
        assert_eq!(
            r.per_layer_line("all_reduce"),
            "1 (no repeated layers found)"
        );
        let mut plan = mlp_stack_plan(2, 2);
        plan.collectives[1].layer = None;
        let r = PlanReport::new(&plan, None);
        assert_eq!(
            r.per_layer_line("all_reduce"),
            "layer 0: 1, layer 1: 0 + 1 outside layers"
        );
    }

    #[test]
    fn matmul_strategies_are_named_from_layouts() {
        let plan = mlp_stack_plan(2, 2);
        let r = PlanReport::new(&plan, None);
        let mm = &r.op_choices["MatMul"];
        assert_eq!(mm["R,S(1) -> S(1) (column-split)"], 2);
        assert_eq!(mm["S(1),S(0) -> P (row-split)"], 2);
        assert_eq!(r.op_choices["Add"]["R,R -> R"], 2);
    }

    #[test]
    fn timings_fill_the_time_fields() {
        let plan = mlp_stack_plan(1, 4);
        let t = Timings {
            compile_ms: 12.5,
            import_ms: 1.0,
            saturate_ms: 3.0,
            extract_ms: 4.5,
        };
        let r = PlanReport::new(&plan, Some(&t));
        assert_eq!(r.search.extract_ms, Some(4.5));
        assert_eq!(r.compile_ms, Some(12.5));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["per_rank"].as_array().map(|a| a.len()), Some(4));
        assert_eq!(json["layers"], serde_json::Value::Null);
        assert_eq!(json["totals"]["all_reduce"]["count"], 1);
    }
}
