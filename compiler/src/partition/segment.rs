//! Solving one segment of the graph: build the e-graph, saturate, extract, read back a
//! [`Selection`].
use super::dp::DpExtractor;
use super::egraph::{
    add_form, ensure_avail, AvailSearcher, Conv, ConvertApplier, DistAnalysis, DistEGraph,
    DistNode, Key, RuleApplier, RuleSearcher, RuleSource, Source,
};
use super::extract::{check, flatten, ExtractError, Extractor, FlatProblem};
use super::form::{part_bytes, tensor_bytes, LocalForm};
use super::rules::{rule_names_with, seed_forms, RuleCx};
use crate::cost::{collective_seconds, op_seconds};
use egg::{Rewrite, Runner, SimpleScheduler};
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::plan::{CostModel, SearchLimits, StopReason};
use tessera_ir::{Layout, NodeId, TensorId, TensorKind};

/// What the objective counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostMode {
    /// Model seconds: collectives (α + ring bytes/β) plus compute.
    Model,
    /// Logical bytes of collectives only (for `lower_bound_bytes`).
    Bytes,
}

/// A part of the graph solved on its own.
#[derive(Debug, Clone)]
pub struct SegmentSpec {
    /// Its nodes, in topological order.
    pub nodes: Vec<NodeId>,
    /// Activations produced before the segment, with their produced layout.
    pub boundary: BTreeMap<TensorId, Layout>,
    /// Required classes: `Avail(t, R)` for graph outputs, `Prod(t, L)` for a boundary out.
    pub roots: Vec<Key>,
    /// Per-rank parameter budget.
    pub budget: Option<f64>,
    /// A boundary tensor whose produced layout is left open (one of these layouts): the
    /// residual stream entering a repeated block.
    pub open: Option<(TensorId, Vec<Layout>)>,
    /// The part of a weight's bytes this segment is charged (absent: all of it): a weight
    /// read by several segments of a layered graph is held once, so each reader pays its
    /// part (see [`super::budget::Budgets::shared_charges`]).
    pub charges: BTreeMap<TensorId, f64>,
    /// Weights loaded in one given layout only (a weight read by the prologue and the
    /// epilogue of a layered graph, held once).
    pub fixed_weights: BTreeMap<TensorId, Layout>,
}

/// The chosen program of a segment (or of the whole graph), in graph terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Form producing each computed tensor.
    pub prod: BTreeMap<TensorId, LocalForm>,
    /// For each (tensor, layout) made available: the conversion and the class it reads.
    pub avail: BTreeMap<(TensorId, Layout), (Conv, Key)>,
}

/// Statistics of the saturation of one segment's e-graph (summed into the plan's
/// [`tessera_ir::plan::SearchStats`]).
#[derive(Debug, Clone)]
pub struct SaturationStats {
    /// E-classes.
    pub eclasses: usize,
    /// E-nodes.
    pub enodes: usize,
    /// Iterations.
    pub iterations: usize,
    /// Why the runner stopped.
    pub stop_reason: StopReason,
    /// Wall milliseconds spent building and saturating the e-graph.
    pub saturate_ms: f64,
}

/// A solved segment.
#[derive(Debug, Clone)]
pub struct SegmentSolution {
    /// The choice.
    pub sel: Selection,
    /// Its cost.
    pub cost: f64,
    /// Proven lower bound.
    pub lower_bound: f64,
    /// Runner statistics.
    pub stats: SaturationStats,
}

/// Runner limits.
pub const ITER_LIMIT: usize = 30;
/// Runner node limit.
pub const NODE_LIMIT: usize = 500_000;
/// Runner time limit in seconds.
pub const TIME_LIMIT_S: u64 = 20;
/// The three limits, as recorded in the plan.
pub const LIMITS: SearchLimits = SearchLimits {
    iterations: ITER_LIMIT as u64,
    nodes: NODE_LIMIT as u64,
    time_s: TIME_LIMIT_S,
};

/// Builds and saturates the e-graph of a segment. Returns the e-graph and the stats.
pub fn build(cx: &RuleCx, seg: &SegmentSpec) -> (DistEGraph, SaturationStats) {
    let started = std::time::Instant::now();
    let g = cx.g;
    let mut an = DistAnalysis {
        forms: Vec::new(),
        forms_of: BTreeMap::new(),
        rule_source: Some(RuleSource {
            graph: cx.shared.clone(),
            producers: cx.producers.clone(),
            n: cx.n,
            grains: cx.grains.clone(),
            computed: seg
                .nodes
                .iter()
                .flat_map(|n| g.node(*n).outputs.iter().copied())
                .collect(),
            user_rules: cx.user_rules.clone(),
        }),
        applied: BTreeSet::new(),
        sources: BTreeMap::new(),
        weight_layouts: BTreeMap::new(),
        classes: BTreeMap::new(),
    };
    let inside: BTreeSet<NodeId> = seg.nodes.iter().copied().collect();
    for &nid in &seg.nodes {
        let nd = g.node(nid);
        for &i in &nd.inputs {
            let src = match g.tensor(i).kind {
                TensorKind::Weight => Source::Weight,
                TensorKind::Input => Source::Input,
                TensorKind::Activation => match cx.producers[i.index()] {
                    Some(p) if inside.contains(&p) => Source::Computed,
                    _ => Source::Boundary(
                        seg.boundary.get(&i).copied().unwrap_or(Layout::Replicated),
                    ),
                },
            };
            an.sources.insert(i, src);
            if src == Source::Weight {
                let mut ls = weight_layouts(cx, i);
                // A weight the caller fixed (read by two segments, which must agree).
                if let Some(l) = seg.fixed_weights.get(&i) {
                    ls.retain(|x| x == l);
                }
                an.weight_layouts.insert(i, ls);
            }
        }
        for (k, &o) in nd.outputs.iter().enumerate() {
            an.sources.insert(o, Source::Computed);
            // The seed: the replicated form (the rules' forms come from the rewrites).
            for f in seed_forms(cx, nid, k) {
                an.forms_of
                    .entry(o)
                    .or_default()
                    .push(an.forms.len() as u32);
                an.forms.push(f);
            }
        }
    }
    for r in &seg.roots {
        let t = match r {
            Key::Prod(t, _) | Key::Avail(t, _) | Key::View(t, _, _) => *t,
        };
        // A weight that is a root without being read by a node of the segment (a graph
        // output that is an initializer) is loaded replicated: without a layout it would
        // have no produced class, and `ensure_avail` would look for one forever.
        if g.tensor(t).kind == TensorKind::Weight {
            an.weight_layouts
                .entry(t)
                .or_insert_with(|| vec![Layout::Replicated]);
        }
        an.sources
            .entry(t)
            .or_insert_with(|| match g.tensor(t).kind {
                TensorKind::Input => Source::Input,
                TensorKind::Weight => Source::Weight,
                TensorKind::Activation => {
                    Source::Boundary(seg.boundary.get(&t).copied().unwrap_or(Layout::Replicated))
                }
            });
    }
    if let Some((t, _)) = &seg.open {
        // Even a graph input: the representative block stands for every block.
        an.sources.insert(*t, Source::Boundary(Layout::Replicated));
    }
    let mut eg = DistEGraph::new(an);
    if let Some((t, ls)) = &seg.open {
        for &l in ls {
            let id = eg.add(DistNode::Boundary(*t, l));
            eg.analysis.classes.insert(Key::Prod(*t, l), id);
        }
    }
    let boundary: Vec<(TensorId, Layout)> = eg
        .analysis
        .sources
        .iter()
        .filter_map(|(t, s)| {
            if let Source::Boundary(l) = s {
                Some((*t, *l))
            } else {
                None
            }
        })
        .collect();
    for (t, l) in boundary {
        let id = eg.add(DistNode::Boundary(t, l));
        eg.analysis.classes.insert(Key::Prod(t, l), id);
    }
    // Seed: the all-replicated program (the first form of every output is `replicated`).
    for &nid in &seg.nodes {
        for &o in &g.node(nid).outputs {
            let first = eg.analysis.forms_of[&o][0];
            add_form(&mut eg, first);
        }
    }
    for r in &seg.roots {
        if let Key::Avail(t, l) = r {
            ensure_avail(&mut eg, *t, *l);
        }
    }
    eg.rebuild();
    let mut rewrites: Vec<Rewrite<DistNode, DistAnalysis>> = rule_names_with(&cx.user_rules)[1..]
        .iter()
        .map(|r| Rewrite::new(*r, RuleSearcher(r), RuleApplier(r)))
        .collect::<Result<_, _>>()
        .expect("custom searchers bind no variables, so construction cannot fail");
    rewrites
        .push(Rewrite::new("convert", AvailSearcher, ConvertApplier).expect("binds no variables"));
    let empty = DistAnalysis {
        forms: vec![],
        forms_of: BTreeMap::new(),
        rule_source: None,
        applied: BTreeSet::new(),
        sources: BTreeMap::new(),
        weight_layouts: BTreeMap::new(),
        classes: BTreeMap::new(),
    };
    let runner: Runner<DistNode, DistAnalysis, ()> = Runner::new(empty)
        .with_egraph(eg)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(ITER_LIMIT)
        .with_node_limit(NODE_LIMIT)
        .with_time_limit(std::time::Duration::from_secs(TIME_LIMIT_S))
        .run(&rewrites);
    let stop_reason = match &runner.stop_reason {
        Some(egg::StopReason::Saturated) => StopReason::Saturated,
        Some(egg::StopReason::IterationLimit(_)) => StopReason::IterationLimit,
        Some(egg::StopReason::NodeLimit(_)) => StopReason::NodeLimit,
        Some(egg::StopReason::TimeLimit(_)) => StopReason::TimeLimit,
        Some(egg::StopReason::Other(s)) => StopReason::Other(s.clone()),
        // `Runner::run` always sets a reason; record the impossible case rather than panic.
        None => StopReason::Other("the runner recorded no stop reason".into()),
    };
    let stats = SaturationStats {
        eclasses: runner.egraph.number_of_classes(),
        enodes: runner.egraph.total_number_of_nodes(),
        iterations: runner.iterations.len(),
        stop_reason,
        saturate_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    (runner.egraph, stats)
}

/// The layouts weight `i` may be loaded in: replicated, split along every axis that splits
/// N ways (a quantised weight only along its scale/zero-point blocks), and in key/value
/// blocks where grouped-query heads are on more ranks than key/value heads.
pub fn weight_layouts(cx: &RuleCx, i: TensorId) -> Vec<Layout> {
    let g = cx.g;
    let shape = &g.tensor(i).shape;
    let mut ls = vec![Layout::Replicated];
    // A quantised weight splits only along its scale/zero-point blocks.
    let splittable = |a: usize| {
        let Some(b) = cx.grains.bounds(shape[a], cx.n) else {
            return false;
        };
        g.weights.get(&i).is_none_or(|w| w.splittable_at(a, &b))
    };
    if cx.n > 1 {
        ls.extend(
            (0..shape.len())
                .filter(|&a| shape[a] > 1 && splittable(a))
                .map(Layout::Split),
        );
        // Key/value blocks (grouped-query heads on more ranks than KV heads).
        if let Some(kv) = cx.grains.kv_blocks(cx.n) {
            let blockable = |a: usize| {
                let per = shape[a] / kv;
                let b: Vec<(usize, usize)> = (0..kv).map(|k| (k * per, (k + 1) * per)).collect();
                shape[a] >= kv
                    && shape[a].is_multiple_of(kv)
                    && g.weights.get(&i).is_none_or(|w| w.splittable_at(a, &b))
            };
            ls.extend(
                (0..shape.len())
                    .filter(|&a| kv > 1 && blockable(a))
                    .map(Layout::Block),
            );
        }
    }
    ls
}

/// Cost (model seconds or bytes) and per-rank parameter bytes of an e-node.
pub fn node_cost(
    cx: &RuleCx,
    eg: &DistEGraph,
    model: &CostModel,
    mode: CostMode,
    n: &DistNode,
) -> (f64, f64) {
    let g = cx.g;
    match n {
        DistNode::Compute(f, _) => (
            if mode == CostMode::Model {
                op_seconds(
                    model,
                    super::form::form_work(g, &cx.grains, cx.n, &eg.analysis.forms[*f as usize]),
                )
            } else {
                0.0
            },
            0.0,
        ),
        DistNode::Convert(t, conv, _, _) => match (conv, mode) {
            (Conv::Collective(k), CostMode::Model) => (
                collective_seconds(model, *k, tensor_bytes(g, *t), cx.n),
                0.0,
            ),
            (Conv::Collective(_), CostMode::Bytes) => (tensor_bytes(g, *t) as f64, 0.0),
            (Conv::Scale, CostMode::Model) => {
                (op_seconds(model, super::form::scale_work(g, *t)), 0.0)
            }
            _ => (0.0, 0.0),
        },
        // Weights count at their stored size (int8 plus scales when quantised).
        DistNode::Load(t, l) => {
            let s = cx
                .grains
                .local(*l, &g.tensor(*t).shape, cx.n)
                .unwrap_or_default();
            (0.0, part_bytes(g, *t, &s) as f64)
        }
        DistNode::LoadView(t, (axis, a, b), l) => {
            let mut s = g.tensor(*t).shape.clone();
            s[*axis] = b - a;
            let s = cx.grains.local(*l, &s, cx.n).unwrap_or_default();
            (0.0, part_bytes(g, *t, &s) as f64)
        }
        DistNode::Input(_) | DistNode::Boundary(..) => (0.0, 0.0),
    }
}

/// Reads a choice of the flattened problem back as a [`Selection`].
fn selection_of(eg: &DistEGraph, flat: &FlatProblem, choice: &BTreeMap<usize, usize>) -> Selection {
    let mut sel = Selection::default();
    for (&c, &ni) in choice {
        match &flat.classes[c].nodes[ni].node {
            DistNode::Compute(f, _) => {
                let form = eg.analysis.forms[*f as usize].clone();
                sel.prod.insert(form.tensor, form);
            }
            DistNode::Convert(t, conv, l, [child]) => {
                sel.avail
                    .insert((*t, *l), (*conv, eg[eg.find(*child)].data));
            }
            _ => {}
        }
    }
    sel
}

fn flat_problem(
    cx: &RuleCx,
    eg: &DistEGraph,
    roots: &[Key],
    model: &CostModel,
    mode: CostMode,
    pins: &BTreeMap<TensorId, Layout>,
    seg: &SegmentSpec,
) -> Result<FlatProblem, ExtractError> {
    let roots: Vec<egg::Id> = roots
        .iter()
        .map(|k| {
            eg.analysis
                .classes
                .get(k)
                .map(|c| eg.find(*c))
                .ok_or_else(|| ExtractError::Infeasible(format!(" (no rule produces {k:?})")))
        })
        .collect::<Result<_, _>>()?;
    let allow = |key: &Key, n: &DistNode| match (key, pins.is_empty()) {
        (_, true) => true,
        (Key::Prod(t, l), false) => {
            pins.get(t).is_none_or(|p| p == l) || matches!(n, DistNode::Boundary(..))
        }
        _ => true,
    };
    let charge = |n: &DistNode| match n {
        DistNode::Load(t, _) | DistNode::LoadView(t, ..) => {
            seg.charges.get(t).copied().unwrap_or(1.0)
        }
        _ => 1.0,
    };
    let mut flat = flatten(
        eg,
        &roots,
        |n| {
            let (cost, bytes) = node_cost(cx, eg, model, mode, n);
            (cost, bytes * charge(n))
        },
        allow,
        seg.budget,
    )?;
    flat.limits = cx.limits;
    Ok(flat)
}

/// Solves a segment with the exact extractor.
pub fn solve(
    cx: &RuleCx,
    seg: &SegmentSpec,
    model: &CostModel,
    mode: CostMode,
    pins: &BTreeMap<TensorId, Layout>,
) -> Result<SegmentSolution, ExtractError> {
    let (eg, stats) = build(cx, seg);
    let flat = flat_problem(cx, &eg, &seg.roots, model, mode, pins, seg)?;
    let ex = DpExtractor {
        value_only: mode == CostMode::Bytes,
    }
    .extract(&flat)?;
    check(&flat, &ex)?;
    Ok(SegmentSolution {
        sel: selection_of(&eg, &flat, &ex.choice),
        cost: ex.cost,
        lower_bound: ex.lower_bound,
        stats,
    })
}

/// The best program of a segment for one (open layout, root variant) pair.
#[derive(Debug, Clone)]
pub struct VariantSolution {
    /// Its cost (infinite when the limited search found none, see `lower`).
    pub cost: f64,
    /// A proven lower bound on the best cost (equal to `cost` when the search was exact).
    pub lower: f64,
    /// Its program.
    pub sel: Selection,
}

/// Solves a segment once per root variant (roots added to `seg.roots`) and, when the
/// segment has an open boundary tensor, once per layout of it: `out[v][i]` is the best
/// program for variant v with the open tensor produced in `seg.open.1[i]` (one entry when
/// there is no open tensor), None when infeasible. The e-graph is built once.
pub fn solve_variants(
    cx: &RuleCx,
    seg: &SegmentSpec,
    variants: &[Vec<Key>],
    model: &CostModel,
    mode: CostMode,
) -> (Vec<Vec<Option<VariantSolution>>>, SaturationStats) {
    let mut all = seg.clone();
    all.roots.extend(variants.iter().flatten().copied());
    let (eg, stats) = build(cx, &all);
    let no_pins = BTreeMap::new();
    let (open_t, open_ls) = match &seg.open {
        Some((t, ls)) => (Some(*t), ls.clone()),
        None => (None, vec![Layout::Replicated]),
    };
    // The variants are independent runs over one e-graph: solved in parallel, collected in
    // order (each run is deterministic, so the result does not depend on the threads).
    use rayon::prelude::*;
    let out: Vec<Vec<Option<VariantSolution>>> = variants
        .par_iter()
        .map(|v| {
            let mut roots = seg.roots.clone();
            roots.extend(v.iter().copied());
            let mut row: Vec<Option<VariantSolution>> = vec![None; open_ls.len()];
            let Ok(flat) = flat_problem(cx, &eg, &roots, model, mode, &no_pins, seg) else {
                return row;
            };
            let Ok(run) = super::dp::run(
                &flat,
                open_t.map(|t| (t, open_ls.as_slice())),
                mode == CostMode::Bytes,
            ) else {
                return row;
            };
            for (li, l_in) in open_ls.iter().enumerate() {
                let best = run.best(&flat, open_t.map(|_| *l_in));
                if let Some((cost, part, picks)) = best {
                    let mut choice = run.choice(part);
                    choice.extend(picks);
                    row[li] = Some(VariantSolution {
                        cost,
                        lower: run.lower(Some(cost)),
                        sel: selection_of(&eg, &flat, &choice),
                    });
                } else if run.dropped.is_finite() {
                    // None found within the limits, but one may exist: keep the bound.
                    row[li] = Some(VariantSolution {
                        cost: f64::INFINITY,
                        lower: run.dropped,
                        sel: Selection::default(),
                    });
                }
            }
            if std::env::var_os("TESSERA_DP_TRACE").is_some() {
                let costs: Vec<(f64, f64)> = row
                    .iter()
                    .map(|v| {
                        v.as_ref()
                            .map_or((f64::NAN, f64::NAN), |v| (v.cost, v.lower))
                    })
                    .collect();
                eprintln!("variant (cost, lower) by open layout: {costs:?}");
            }
            row
        })
        .collect();
    (out, stats)
}
