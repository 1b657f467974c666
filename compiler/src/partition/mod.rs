//! E-graph partitioner: chooses a layout for every tensor and a local form for every op so
//! that the per-rank programs compute the original function at minimal modelled cost.
//!
//! See `docs/partitioner.md` for the language, the rule table, the cost model, the exact
//! extraction, the layer detection and the lower bound.
pub mod budget;
pub mod chain;
pub mod conv_notes;
pub mod cuts;
pub mod dp;
pub mod dp_bound;
pub mod dp_front;
pub mod dp_order;
pub mod egraph;
pub mod extract;
pub mod form;
pub mod layers;
pub mod lower;
pub mod mesh;
pub mod ragged;
pub mod rules;
pub mod segment;
pub mod stacks;
pub mod subchain;
pub mod summary;
pub mod unshare;

use segment::{CostMode, Selection};
use std::collections::BTreeMap;
use std::time::Instant;
use tessera_ir::plan::{
    CostModel, Mesh, Objective, Plan, SearchStats, SourceModel, Timings, FORMAT_VERSION,
};
use tessera_ir::{Graph, Layout, TensorId, TensorKind};

/// What the search optimises (under [`ObjectiveKind::Memory`], compute only breaks ties,
/// see [`MEMORY_OBJECTIVE_COMPUTE_WEIGHT`]).
pub use tessera_ir::plan::ObjectiveKind;

/// Options of [`partition`].
#[derive(Debug, Clone)]
pub struct PartitionOptions {
    /// Number of devices of the 1-D mesh.
    pub devices: usize,
    /// Cost model.
    pub cost_model: CostModel,
    /// Objective.
    pub objective: ObjectiveKind,
    /// Per-rank parameter budget in bytes, replacing the default (memory objective).
    pub memory_per_device: Option<u64>,
    /// Pinned layouts by tensor name.
    pub pins: BTreeMap<String, Layout>,
    /// Detect repeated layers and solve one representative block (default true); false
    /// solves the whole graph at once (exact under the global budget, slow for deep models).
    pub detect_layers: bool,
    /// Time the search may take before it settles for the best plan found (with its lower
    /// bound and gap in the plan); None: only the state budget limits it.
    pub time_limit: Option<std::time::Duration>,
    /// States the exact extraction keeps per step before it narrows to the most promising
    /// ones ([`extract::DEFAULT_MAX_STATES`] by default).
    pub max_states: usize,
    /// A user's distribution rules ([`rules::dsl::parse_user_rules`]), applied after the
    /// built-in table.
    pub dist_rules: Vec<rules::dsl::DistRule>,
}

impl PartitionOptions {
    /// Defaults: time objective (modelled communication + compute within the memory
    /// budget), `cpu` cost model, no pins.
    pub fn new(devices: usize) -> Self {
        PartitionOptions {
            devices,
            cost_model: crate::cost::cpu(),
            objective: ObjectiveKind::Time,
            memory_per_device: None,
            pins: BTreeMap::new(),
            detect_layers: true,
            time_limit: Some(DEFAULT_TIME_LIMIT),
            max_states: extract::DEFAULT_MAX_STATES,
            dist_rules: Vec::new(),
        }
    }
}

/// Factors by which a default parameter budget no plan fits is relaxed in turn (each on the
/// previous one: 1.5×, 3×, then 6× the default, which holds a whole model at N ≤ 6 and
/// most of one beyond).
const RELAX_FACTORS: [f64; 3] = [1.5, 2.0, 2.0];

/// A layered plan over the memory budget is re-solved as one graph only up to this many
/// nodes (whole solves of larger graphs run past the time limit).
pub const WHOLE_SOLVE_MAX_NODES: usize = 800;

/// Default of [`PartitionOptions::time_limit`].
pub const DEFAULT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A partitioned graph: the plan and how long the search took.
#[derive(Debug, Clone)]
pub struct Partitioned {
    /// The plan (source path/sha left empty for the CLI to fill in).
    pub plan: Plan,
    /// Timings (import_ms left 0).
    pub timings: Timings,
}

/// Partitioning failures.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The device count is not usable.
    #[error("invalid device count {0}: need at least 1")]
    Devices(usize),
    /// The graph is malformed.
    #[error("invalid graph: {0}")]
    Graph(String),
    /// A pin names no tensor.
    #[error("--pin: no tensor named '{0}'")]
    UnknownPin(String),
    /// A pin cannot be honoured.
    #[error("--pin {tensor}={layout}: {reason}")]
    ImpossiblePin {
        /// Tensor name.
        tensor: String,
        /// Layout asked.
        layout: Layout,
        /// Why.
        reason: String,
    },
    /// No plan satisfies the constraints.
    #[error("no valid plan: {0}")]
    Infeasible(String),
    /// An internal invariant failed.
    #[error("internal partitioner error: {0}")]
    Internal(String),
}

/// Resolves pins to tensor ids, checking that each is possible in principle.
fn resolve_pins(
    g: &Graph,
    n: usize,
    pins: &BTreeMap<String, Layout>,
) -> Result<BTreeMap<TensorId, Layout>, PartitionError> {
    let mut out = BTreeMap::new();
    let grains = ragged::Grains::of(g);
    for (name, &layout) in pins {
        let t = g
            .tensor_by_name(name)
            .ok_or_else(|| PartitionError::UnknownPin(name.clone()))?;
        let info = g.tensor(t);
        let bad = |reason: String| PartitionError::ImpossiblePin {
            tensor: name.clone(),
            layout,
            reason,
        };
        if grains.local(layout, &info.shape, n).is_none() {
            return Err(bad(format!(
                "shape {:?} does not split over {n} devices that way",
                info.shape
            )));
        }
        match (info.kind, layout) {
            (TensorKind::Input, l) if l != Layout::Replicated => {
                return Err(bad(
                    "graph inputs are fed replicated (slicing them is free)".into(),
                ))
            }
            (TensorKind::Weight, Layout::Partial) => {
                return Err(bad("weights cannot be pinned Partial".into()))
            }
            _ => {}
        }
        if n == 1 && layout != Layout::Replicated {
            return Err(bad("one device: everything is replicated".into()));
        }
        out.insert(t, layout);
    }
    Ok(out)
}

/// Under the memory objective the order is lexicographic: within the budget, the
/// fewest and smallest collectives first, then the least compute. Compute seconds are
/// therefore scaled down by this factor so that they only break ties between plans with the
/// same communication; under the time and latency objectives compute counts in full.
pub const MEMORY_OBJECTIVE_COMPUTE_WEIGHT: f64 = 1e-3;

/// The cost model the search runs under (see [`MEMORY_OBJECTIVE_COMPUTE_WEIGHT`]).
pub fn search_cost_model(opts: &PartitionOptions) -> CostModel {
    let mut m = opts.cost_model.clone();
    if opts.objective == ObjectiveKind::Memory {
        let w = MEMORY_OBJECTIVE_COMPUTE_WEIGHT;
        m.flops_per_s /= w;
        let c = &mut m.calibration;
        c.gemm_flops_per_s.values_mut().for_each(|r| *r /= w);
        c.mem_bytes_per_s = c.mem_bytes_per_s.map(|b| b / w);
        c.op_overhead_s *= w;
    }
    m
}

/// Partitions `graph` over `opts.devices` devices (see the module docs).
pub fn partition(graph: &Graph, opts: &PartitionOptions) -> Result<Partitioned, PartitionError> {
    let start = Instant::now();
    let n = opts.devices;
    if n == 0 {
        return Err(PartitionError::Devices(n));
    }
    graph
        .validate()
        .map_err(|e| PartitionError::Graph(e.to_string()))?;
    // Always (not only when detecting layers), so a plan does not depend on the solve.
    let unshared = unshare::unshare_small_constants(graph);
    let graph = unshared.as_ref().unwrap_or(graph);
    let pins = resolve_pins(graph, n, &opts.pins)?;
    let mut cx = rules::RuleCx::new(graph, n);
    cx.user_rules = std::sync::Arc::new(opts.dist_rules.clone());
    cx.limits = extract::ExtractLimits {
        max_states: opts.max_states.max(1),
        deadline: None,
    };
    let mut budgets = budget::Budgets::new(graph, n, opts);
    let layer_info = if pins.is_empty() && opts.detect_layers {
        layers::detect(graph)
    } else {
        None
    };
    let t0 = Instant::now();
    let tags = layer_info
        .as_ref()
        .map(|l| l.plan_info().node_layer)
        .unwrap_or_else(|| vec![None; graph.nodes.len()]);
    let mut fallback_notes: Vec<String> = Vec::new();
    // The layered (or whole, without layers) solve under a budget.
    let solve = |cx: &mut rules::RuleCx, b: &budget::Budgets| {
        search(cx, opts, &pins, b, layer_info.as_ref(), &tags, start)
    };
    let over_budget = |r: &Result<_, PartitionError>| matches!(r, Err(PartitionError::Infeasible(m)) if m.contains("parameter budget"));
    let mut result = solve(&mut cx, &budgets);
    if over_budget(&result) && opts.memory_per_device.is_none() {
        if let Some(slack) = budget::Budgets::with_constants_slack(graph, n, opts) {
            // Stored tables (folded position embeddings) that no plan within the cap
            // splits: slack, as the model's vectors are, and the same fallbacks after.
            budgets = slack;
            result = solve(&mut cx, &budgets);
        }
    }
    if over_budget(&result) {
        if let Some(uncapped) = budgets.uncapped() {
            // No plan fits the budget capped at PARAM_SLACK / N: the default budget instead.
            if let Err(e) = &result {
                fallback_notes.push(format!(
                    "no plan fits {} / N of the large weights per rank ({e}); solved with \
                     the default budget",
                    budget::PARAM_SLACK
                ));
            }
            budgets = uncapped;
            result = solve(&mut cx, &budgets);
        }
    }
    // The default budget assumes every large weight can split; where the model's ops keep
    // some whole (a full reduction before a row-parallel MatMul, as DynamicQuantizeLinear
    // is), the budget is relaxed step by step rather than refusing to plan. A budget the
    // user gave (`--memory-per-device`) is never relaxed.
    if opts.memory_per_device.is_none() {
        for factor in RELAX_FACTORS {
            if !over_budget(&result) {
                break;
            }
            let Some(relaxed) = budgets.relaxed(factor) else {
                break;
            };
            if let Err(e) = &result {
                fallback_notes.push(format!("{e}; solved again with {factor}× that budget"));
            }
            budgets = relaxed;
            result = solve(&mut cx, &budgets);
        }
    }
    let (mut solved, mut bytes_solved, mut lowered) = result?;
    if let (Some(_), Some(total)) = (&layer_info, budgets.total) {
        // Pieces solved apart may hold one shared weight (a tied embedding / LM head) in two
        // layouts, and the plan then holds both: solve the graph whole instead — when the
        // graph is small enough for a whole solve to finish in its time. A deep model
        // (a 32-layer export: 1,700 nodes, 57,000 e-nodes) would run far past the time limit
        // for a worse plan (measured: 357 s, gap 92 %), so its layered plan stays, with a
        // note of how far over the budget it is.
        let over = lowered.param_bytes as f64 > total + 0.5;
        if over && graph.nodes.len() > WHOLE_SOLVE_MAX_NODES {
            fallback_notes.push(format!(
                "the layered solve holds {} parameter bytes per rank, {:.1} % over the budget \
                 of {} (a weight shared by the prologue, the layers or the epilogue, or the \
                 budget's split between them); the graph ({} nodes) is too large to re-solve \
                 whole within the time limit, so the layered plan is kept",
                lowered.param_bytes,
                (lowered.param_bytes as f64 / total - 1.0) * 100.0,
                total.round(),
                graph.nodes.len()
            ));
        } else if over {
            fallback_notes.push(format!(
                "the layered solve held {} parameter bytes per rank, over the budget of {} (a \
                 weight shared by the prologue, the layers or the epilogue in two layouts): \
                 solved as one graph instead",
                lowered.param_bytes,
                total.round()
            ));
            // The layers stay recorded (steps and collectives keep their layer tags).
            (solved, bytes_solved, lowered) =
                search(&mut cx, opts, &pins, &budgets, None, &tags, start)?;
        }
    }
    let extract_ms = t0.elapsed().as_secs_f64() * 1e3;
    let lower_bound_bytes = bytes_solved.lower_bound.round() as u64;
    let mut plan = assemble(
        graph,
        opts,
        &pins,
        lowered,
        &solved,
        lower_bound_bytes,
        layer_info.map(|l| l.plan_info()),
    );
    // The budget the plan was solved under (after any fallback).
    plan.objective.memory_per_device = budgets.total.map(|b| b as u64);
    plan.summary.notes.extend(fallback_notes);
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let timings = Timings {
        compile_ms,
        import_ms: 0.0,
        saturate_ms: solved.saturate_ms,
        extract_ms: extract_ms - solved.saturate_ms,
    };
    Ok(Partitioned { plan, timings })
}

/// The model-cost and bytes solves of `graph` (layered when `layer_info` is given) and the
/// lowered model-cost plan, its steps tagged with `tags` (the layer of each node).
fn search(
    cx: &mut rules::RuleCx,
    opts: &PartitionOptions,
    pins: &BTreeMap<TensorId, Layout>,
    budgets: &budget::Budgets,
    layer_info: Option<&layers::Layers>,
    tags: &[Option<u32>],
    start: Instant,
) -> Result<(Solved, Solved, lower::Lowered), PartitionError> {
    let search_model = search_cost_model(opts);
    // The model pass (the plan) and the bytes pass (its lower bound on bytes moved) are
    // independent solves: they run side by side, each until the time limit.
    cx.limits.deadline = opts.time_limit.map(|l| start + l);
    let (model_cx, bytes_cx) = (cx.clone(), cx.clone());
    let (solved, bytes_solved) = std::thread::scope(|scope| {
        let bytes = scope.spawn(|| {
            chain::solve_graph(
                &bytes_cx,
                layer_info,
                budgets,
                &opts.cost_model,
                CostMode::Bytes,
                pins,
            )
        });
        let model = chain::solve_graph(
            &model_cx,
            layer_info,
            budgets,
            &search_model,
            CostMode::Model,
            pins,
        );
        // A panic in the bytes pass is a bug: surface it rather than lose it.
        let bytes = bytes
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (model, bytes)
    });
    let solved = solved.map_err(|e| with_pin_context(e, &opts.pins))?;
    let bytes_solved = bytes_solved.map_err(|e| with_pin_context(e, &opts.pins))?;
    let lowered =
        lower::lower(cx.g, opts.devices, &solved.sel, tags).map_err(PartitionError::Internal)?;
    Ok((solved, bytes_solved, lowered))
}

fn with_pin_context(e: PartitionError, pins: &BTreeMap<String, Layout>) -> PartitionError {
    match e {
        PartitionError::Infeasible(m) if !pins.is_empty() => {
            let names: Vec<String> = pins.iter().map(|(k, v)| format!("{k}={v}")).collect();
            PartitionError::Infeasible(format!("{m} (with pins {})", names.join(", ")))
        }
        e => e,
    }
}

/// The whole-graph result of the search.
#[derive(Debug, Clone)]
pub struct Solved {
    /// Chosen program.
    pub sel: Selection,
    /// Its cost.
    pub cost: f64,
    /// Proven lower bound.
    pub lower_bound: f64,
    /// Search statistics (summed over the solved segments).
    pub stats: SearchStats,
    /// Milliseconds spent saturating.
    pub saturate_ms: f64,
}

fn assemble(
    graph: &Graph,
    opts: &PartitionOptions,
    pins: &BTreeMap<TensorId, Layout>,
    lowered: lower::Lowered,
    solved: &Solved,
    lower_bound_bytes: u64,
    layers: Option<tessera_ir::plan::LayerInfo>,
) -> Plan {
    let n = opts.devices;
    let estimates = summary::estimates(graph, n, &lowered, &opts.cost_model);
    let summary = summary::summarize(graph, n, &lowered, &solved.sel, lower_bound_bytes);
    let _ = pins;
    Plan {
        format_version: FORMAT_VERSION,
        source: SourceModel::default(),
        input_shapes: graph
            .inputs
            .iter()
            .map(|t| {
                (
                    graph.tensor(*t).name.clone(),
                    graph.tensor(*t).shape.clone(),
                )
            })
            .collect(),
        mesh: Mesh::tp(n),
        data: None,
        cost_model: opts.cost_model.clone(),
        objective: Objective {
            kind: opts.objective,
            // Set by the caller: the budget after any fallback.
            memory_per_device: None,
            pins: opts.pins.clone(),
        },
        graph: graph.clone(),
        layouts: lowered.layouts.clone(),
        values: lowered.values.clone(),
        outputs: lowered.outputs.clone(),
        ranks: lowered.ranks.clone(),
        collectives: lowered.collectives.clone(),
        weight_shards: lowered.weight_shards.clone(),
        estimates,
        layers,
        search: solved.stats.clone(),
        summary,
    }
}
