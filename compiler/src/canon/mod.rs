//! Canonicalisation: every export idiom of one model becomes the same canonical graph.
//!
//! The imported graph is encoded as a term of the language of [`lang`] in an `egg`
//! e-graph; the rewrite rules of [`rules`] (the table `rules.canon`, plus a user's rules
//! file) run to saturation under explicit limits, so spellings of one computation meet in
//! one e-class (`x/8` and `x·0.125`, `Add(b, MatMul)` and `Add(MatMul, b)`, decomposed and
//! native LayerNorm, `Cast(int8 W)·s` and a quantised weight leaf); extraction ([`build`])
//! picks in each class the spelling with the fewest, most canonical ops and rebuilds the
//! graph. The partitioner then sees canonical ops (LayerNorm, RMSNorm, GELU, SiLU, quantised
//! weights), whatever the exporter wrote.
mod analysis;
mod build;
mod choice;
pub mod guards;
pub mod lang;
pub mod rules;

use analysis::{CanonAnalysis, CanonGraph, LeafInfo};
use egg::{Id, Runner, StopReason};
use lang::{has_attr, sym_name, CNode};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_ir::{Graph, Tensor, TensorId};

pub use rules::{builtin, parse_rules, rules_markdown, rules_text, CanonRule, RuleError};

/// Limits of the saturation run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanonLimits {
    /// Iterations.
    pub iterations: usize,
    /// E-nodes.
    pub nodes: usize,
    /// Wall time.
    pub time: Duration,
}

impl Default for CanonLimits {
    fn default() -> Self {
        CanonLimits {
            iterations: 30,
            nodes: 300_000,
            time: Duration::from_secs(5),
        }
    }
}

/// What the pass did (kept in the import report).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CanonReport {
    /// Rules run.
    pub rules: usize,
    /// Saturation iterations.
    pub iterations: usize,
    /// Why the run stopped: `saturated`, or the limit that stopped it.
    pub stop_reason: String,
    /// E-nodes and e-classes at the end.
    pub egraph_nodes: usize,
    /// E-classes at the end.
    pub egraph_classes: usize,
    /// Times each rule merged something, by rule name (rules that never fired omitted).
    pub applied: BTreeMap<String, usize>,
    /// Graph nodes before and after.
    pub nodes_before: usize,
    /// Graph nodes after.
    pub nodes_after: usize,
    /// Ops of the canonical graph by name.
    pub ops_after: BTreeMap<String, usize>,
    /// Why the source graph was kept instead of the canonical one (`None`: it was not).
    pub kept_source: Option<String>,
}

/// The encoded source graph: the e-graph, the class of every tensor, its op e-nodes.
struct Encoded {
    eg: CanonGraph,
    class: Vec<Option<Id>>,
    nodes: Vec<CNode>,
}

/// A quantised weight with an inline scale of ones and an integral zero point or none.
fn unit_scale(w: &tessera_ir::Weight) -> bool {
    let Some(q) = &w.quant else {
        return false;
    };
    let inline = |p: &tessera_ir::Weight| match &p.data {
        tessera_ir::WeightData::Inline { tensor } => Some(tensor.to_f64_vec()),
        tessera_ir::WeightData::File { .. } => None,
    };
    let ones = inline(&q.scale).is_some_and(|v| v.iter().all(|&x| x == 1.0));
    let zero = q.zero_point.as_deref().is_none_or(|z| !z.dtype.is_float());
    ones && zero && matches!(w.dtype, tessera_ir::DType::I8 | tessera_ir::DType::U8)
}

/// Encodes `g` in a fresh e-graph.
fn encode(g: &Graph, consts: &BTreeMap<TensorId, Tensor>) -> Encoded {
    let mut eg = CanonGraph::new(CanonAnalysis::default());
    let mut class: Vec<Option<Id>> = vec![None; g.tensors.len()];
    let mut nodes = Vec::new();
    let mut readers = vec![0usize; g.tensors.len()];
    for n in &g.nodes {
        for t in &n.inputs {
            readers[t.index()] += 1;
        }
    }
    for &t in g.inputs.iter().chain(g.weights.keys()) {
        let info = g.tensor(t);
        // 8-bit values are stored weights, never folded (they become quantised leaves).
        let foldable = consts
            .get(&t)
            .filter(|v| !matches!(v.dtype, tessera_ir::DType::I8 | tessera_ir::DType::U8));
        let konst = foldable.and_then(|v| eg.analysis.interner.konst(v));
        // Float parameters of more than one element keep their identity (see
        // `Data::pinned`); scalars and integer constants meet equal values.
        let pinned = konst.is_some() && info.dtype.is_float() && tessera_ir::numel(&info.shape) > 1;
        // The analysis reads a leaf's type when the leaf is added.
        eg.analysis.leaves.insert(
            t.0,
            LeafInfo {
                dtype: info.dtype,
                shape: info.shape.clone(),
                weight: g.weights.contains_key(&t),
                konst: konst.filter(|_| pinned),
                readers: readers[t.index()],
                unit_scale: g.weights.get(&t).is_some_and(unit_scale),
            },
        );
        let id = eg.add(CNode::Leaf(t.0));
        if let (Some(k), false) = (konst, pinned) {
            let c = eg.add(CNode::Const(k));
            eg.union(id, c);
        }
        class[t.index()] = Some(id);
    }
    for node in &g.nodes {
        let mut children = Vec::with_capacity(node.inputs.len() + 1);
        if has_attr(&node.op) {
            let a = eg.analysis.interner.op(&node.op);
            children.push(eg.add(CNode::Attr(a)));
        }
        // Nodes are in topological order, so every input has its class.
        children.extend(node.inputs.iter().filter_map(|t| class[t.index()]));
        let sym = sym_name(&node.op);
        for (k, out) in node.outputs.iter().enumerate() {
            let n = CNode::op(&sym, k as u8, children.clone());
            nodes.push(n.clone());
            class[out.index()] = Some(eg.add(n));
        }
    }
    eg.rebuild();
    Encoded { eg, class, nodes }
}

/// Canonicalises `g` with `rules`. `consts` holds the values of small weights (the
/// importer's folded constants) so guards can read them. Never fails: when the canonical
/// graph cannot be built or validated, the source graph is returned with the reason in
/// [`CanonReport::kept_source`].
///
/// Rules run in two phases: the phase-1 rules saturate and the canonical graph is built;
/// then the phase-2 rules ([`CanonRule::phase`]) saturate alone on that graph. The report
/// sums both phases (rules, iterations and applications; the e-graph size is the larger).
pub fn canonicalize(
    g: &Graph,
    consts: &BTreeMap<TensorId, Tensor>,
    rules: &[CanonRule],
    limits: &CanonLimits,
) -> (Graph, CanonReport) {
    let (first, second): (Vec<CanonRule>, Vec<CanonRule>) =
        rules.iter().cloned().partition(|r| r.phase <= 1);
    let (out, mut report) = saturate(g, consts, &first, limits);
    if second.is_empty() || report.kept_source.is_some() {
        return (out, report);
    }
    // The canonical graph's own inline constants: its tensor ids are not the source's.
    let (out2, r2) = saturate(&out, &inline_constants(&out), &second, limits);
    report.rules += r2.rules;
    report.iterations += r2.iterations;
    if report.stop_reason == "saturated" {
        report.stop_reason = r2.stop_reason;
    }
    report.egraph_nodes = report.egraph_nodes.max(r2.egraph_nodes);
    report.egraph_classes = report.egraph_classes.max(r2.egraph_classes);
    for (name, n) in r2.applied {
        *report.applied.entry(name).or_insert(0) += n;
    }
    match r2.kept_source {
        // Phase 2's graph failed: phase 1's stands, with its counts.
        Some(r) => report.kept_source = Some(format!("phase 2 kept phase 1's graph: {r}")),
        None => {
            report.nodes_after = r2.nodes_after;
            report.ops_after = r2.ops_after;
        }
    }
    (out2, report)
}

/// The values of `g`'s inline weights (the constants a graph carries itself), as the
/// `consts` of [`canonicalize`].
pub fn inline_constants(g: &Graph) -> BTreeMap<TensorId, Tensor> {
    g.weights
        .iter()
        .filter_map(|(t, w)| match &w.data {
            tessera_ir::WeightData::Inline { tensor } => Some((*t, tensor.clone())),
            _ => None,
        })
        .collect()
}

/// One phase of [`canonicalize`]: saturation with `rules`, then the rebuilt graph.
fn saturate(
    g: &Graph,
    consts: &BTreeMap<TensorId, Tensor>,
    rules: &[CanonRule],
    limits: &CanonLimits,
) -> (Graph, CanonReport) {
    let Encoded { eg, class, nodes } = encode(g, consts);
    let rewrites: Vec<_> = rules.iter().map(CanonRule::rewrite).collect();
    let runner = Runner::default()
        .with_egraph(eg)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(&rewrites);
    let mut applied = BTreeMap::new();
    if std::env::var_os("TESSERA_CANON_DEBUG").is_some() {
        for (i, it) in runner.iterations.iter().enumerate() {
            let mut top: Vec<_> = it.applied.iter().collect();
            top.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
            top.truncate(6);
            eprintln!(
                "canon iter {i}: {} nodes {} classes {:?}",
                it.egraph_nodes, it.egraph_classes, top
            );
        }
    }
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *applied.entry(name.to_string()).or_insert(0) += n;
        }
    }
    let stop_reason = match &runner.stop_reason {
        Some(StopReason::Saturated) | None => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s:.1} s)"),
        Some(StopReason::Other(s)) => s.clone(),
    };
    let mut report = CanonReport {
        rules: rules.len(),
        iterations: runner.iterations.len(),
        stop_reason,
        egraph_nodes: runner.egraph.total_size(),
        egraph_classes: runner.egraph.number_of_classes(),
        applied,
        nodes_before: g.nodes.len(),
        ..CanonReport::default()
    };
    let out = build::rebuild(&runner.egraph, g, &class, &nodes).and_then(|out| {
        out.validate()
            .map_err(|e| format!("canonical graph invalid: {e}"))?;
        Ok(out)
    });
    match out {
        Ok(out) => {
            report.nodes_after = out.nodes.len();
            for n in &out.nodes {
                *report.ops_after.entry(n.op.name()).or_insert(0) += 1;
            }
            (out, report)
        }
        Err(reason) => {
            report.nodes_after = g.nodes.len();
            report.kept_source = Some(reason);
            (g.clone(), report)
        }
    }
}
