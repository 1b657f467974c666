//! Solving a graph with repeated layers: the pieces ([`super::stacks`]), then an exact DP
//! over the chain of blocks of each stack.
//!
//! The stream tensor `x_j` between blocks is produced in one layout `L_j` (by block j−1,
//! or the prologue) and converted by its readers in block j. So the cost of the whole
//! program is `P[L_0] + Σ_j C[L_{j-1}][L_j] + E[L_k]`, where `C[a][b]` is the best program
//! of one block whose stream input is produced in `a` and whose stream output is produced
//! in `b`, under the block's share of the parameter budget. All blocks have the same
//! signature, so `C` is solved once (one e-graph, one frontier-DP run per output layout
//! with the input layout left open) — once per phase where blocks read different globals
//! in turn ([`Layers::phases`]: block j costs `C_{j mod q}`). Layouts considered for the stream: R, P (float)
//! and S(a) for every axis with N | extent > 1 — every layout a rule can produce. Globals
//! read by the blocks (masks, rotary tables) are produced replicated by the prologue.
//! Where stacks are nested (an encoder's in a decoder's prologue, [`Layers::inner`]), the
//! inner stack's chain runs first, from the innermost prologue to each layout of the link's
//! output: `P'[v] = min P[L_0] + Σ C[..] + M[L_k][v]` is the outer stack's prologue.
//! The result is exact given the per-block budget shares and replicated globals.
use super::budget::Budgets;
use super::egraph::Key;
use super::extract::ExtractError;
use super::layers::Layers;
use super::rules::RuleCx;
use super::segment::{solve, CostMode, SaturationStats, SegmentSpec, Selection, VariantSolution};
use super::stacks::{solve_pieces, Matrix, StackBlocks};
use super::{PartitionError, Solved};
use std::collections::BTreeMap;
use tessera_ir::plan::{CostModel, Extractor, SearchStats, StopReason};
use tessera_ir::{Layout, NodeId, TensorId};

/// Maps a block-0 selection onto block j.
fn map_selection(sel: &Selection, map: &BTreeMap<TensorId, TensorId>, shift: u32) -> Selection {
    use super::form::{Lowering, Operand};
    let mt = |t: &TensorId| *map.get(t).unwrap_or(t);
    let mn = |n: NodeId| NodeId(n.0 + shift);
    let mk = |k: &Key| match k {
        Key::Prod(t, l) => Key::Prod(mt(t), *l),
        Key::Avail(t, l) => Key::Avail(mt(t), *l),
        Key::View(t, s, l) => Key::View(mt(t), *s, *l),
    };
    let mut out = Selection::default();
    for (t, f) in &sel.prod {
        let mut f = f.clone();
        f.node = mn(f.node);
        f.tensor = mt(&f.tensor);
        for o in &mut f.inputs {
            match o {
                Operand::Tensor { t, .. } | Operand::View { t, .. } => *t = mt(t),
            }
        }
        if let Lowering::FusedSection { matmul, add } = &mut f.lowering {
            *matmul = mn(*matmul);
            *add = add.map(mn);
        }
        out.prod.insert(mt(t), f);
    }
    for ((t, l), (c, k)) in &sel.avail {
        out.avail.insert((mt(t), *l), (*c, mk(k)));
    }
    out
}

/// The map of block r's tensors to block j's (`tensor_maps` map block 0's).
fn block_map(ly: &Layers, r: usize, j: usize) -> BTreeMap<TensorId, TensorId> {
    let to_j = &ly.tensor_maps[j - 1];
    if r == 0 {
        return to_j.clone();
    }
    ly.tensor_maps[r - 1]
        .iter()
        .filter_map(|(a0, ar)| to_j.get(a0).map(|aj| (*ar, *aj)))
        .collect()
}

/// Adds `s`'s choices to `into`.
pub(super) fn merge(into: &mut Selection, s: &Selection) {
    into.prod
        .extend(s.prod.iter().map(|(k, v)| (*k, v.clone())));
    into.avail.extend(s.avail.iter().map(|(k, v)| (*k, *v)));
}

/// Exact chain DP over `k` blocks of `blocks` (block j: phase `j mod q`) from the costs
/// `front` of the stream entering the first block to the costs `end` of the last block's
/// output (`lower`: over the pieces' lower bounds); returns the total and the stream
/// layout indices `L_0 ..= L_k`.
fn chain_dp(
    blocks: &[Matrix],
    k: usize,
    front: &[f64],
    end: &[f64],
    lower: bool,
) -> Option<(f64, Vec<usize>)> {
    let nl = front.len();
    let mut f: Vec<f64> = front.to_vec();
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(k);
    for j in 0..k {
        let mut nf = vec![f64::INFINITY; nl];
        let mut nb = vec![0; nl];
        for b in 0..nl {
            for (a, fa) in f.iter().enumerate() {
                let c = fa + value(&blocks[j % blocks.len()][a][b], lower);
                if c < nf[b] {
                    nf[b] = c;
                    nb[b] = a;
                }
            }
        }
        f = nf;
        back.push(nb);
    }
    let (mut best, mut arg) = (f64::INFINITY, 0);
    for (a, fa) in f.iter().enumerate() {
        let c = fa + end[a];
        if c < best {
            best = c;
            arg = a;
        }
    }
    if !best.is_finite() {
        return None;
    }
    let mut path = vec![arg];
    for nb in back.iter().rev() {
        let last = *path.last().expect("path starts non-empty");
        path.push(nb[last]);
    }
    path.reverse();
    Some((best, path))
}

/// A piece's cost (`lower`: its lower bound); infinite when infeasible.
fn value(o: &Option<VariantSolution>, lower: bool) -> f64 {
    o.as_ref()
        .map_or(f64::INFINITY, |s| if lower { s.lower } else { s.cost })
}

fn pick(o: &Option<VariantSolution>) -> Result<&Selection, PartitionError> {
    o.as_ref()
        .map(|v| &v.sel)
        .ok_or_else(|| PartitionError::Internal("chain DP picked an infeasible piece".into()))
}

/// The programs of stack `ly` chained from `front` (by its stream layouts) through its
/// blocks into each column `v` of `link` (`[its output layout][v]`): per column the best
/// chain's cost, the best chain's lower bound and (`with_sel`) the chosen program.
fn through_stack(
    ly: &Layers,
    st: &StackBlocks,
    front: &[Option<VariantSolution>],
    link: &Matrix,
    with_sel: bool,
) -> Result<Vec<Option<VariantSolution>>, PartitionError> {
    let k = ly.info.count;
    let columns = link.first().map_or(0, Vec::len);
    let front_of = |lower| front.iter().map(|o| value(o, lower)).collect::<Vec<_>>();
    let (front_cost, front_lower) = (front_of(false), front_of(true));
    let mut out = Vec::with_capacity(columns);
    for v in 0..columns {
        let end_of = |lower| {
            link.iter()
                .map(|row| value(&row[v], lower))
                .collect::<Vec<_>>()
        };
        let best = chain_dp(&st.block, k, &front_cost, &end_of(false), false);
        let bound = chain_dp(&st.block, k, &front_lower, &end_of(true), true);
        let Some((lower, _)) = bound else {
            out.push(None);
            continue;
        };
        let (cost, sel) = match best {
            Some((cost, path)) if with_sel => {
                let mut sel = pick(&front[path[0]])?.clone();
                let q = st.block.len();
                for j in 0..k {
                    let r = j % q;
                    let s = pick(&st.block[r][path[j]][path[j + 1]])?;
                    if j == r {
                        merge(&mut sel, s);
                    } else {
                        let shift = (ly.starts[j] - ly.starts[r]) as u32;
                        merge(&mut sel, &map_selection(s, &block_map(ly, r, j), shift));
                    }
                }
                merge(&mut sel, pick(&link[path[k]][v])?);
                (cost, sel)
            }
            Some((cost, _)) => (cost, Selection::default()),
            None => (f64::INFINITY, Selection::default()),
        };
        out.push(Some(VariantSolution { cost, lower, sel }));
    }
    Ok(out)
}

/// Solves a layered graph: pieces, chain DP per stack, and (model mode) the assembled
/// selection.
pub fn solve_layered(
    cx: &RuleCx,
    ly: &Layers,
    budgets: &Budgets,
    model: &CostModel,
    mode: CostMode,
) -> Result<Solved, PartitionError> {
    let pieces = solve_pieces(cx, ly, budgets, model, mode);
    let levels = ly.levels();
    let with_sel = mode == CostMode::Model;
    // Per choice of the shared weights' layouts: the innermost stack first, each chain
    // feeding the next stack's prologue through its link, the outermost into the epilogue.
    let mut best: Option<VariantSolution> = None;
    let mut lower_bound = f64::INFINITY;
    for ends in &pieces.ends {
        let mut front = ends.front.clone();
        for i in (1..levels.len()).rev() {
            front = through_stack(
                levels[i],
                &pieces.stacks[i],
                &front,
                &ends.links[i - 1],
                with_sel,
            )?;
        }
        let end: Matrix = ends.epilogue.iter().map(|e| vec![e.clone()]).collect();
        let Some(Some(sol)) =
            through_stack(levels[0], &pieces.stacks[0], &front, &end, with_sel)?.pop()
        else {
            continue;
        };
        // Each piece's bound is at most its cost, so the chain over bounds bounds the optimum.
        lower_bound = lower_bound.min(sol.lower);
        if sol.cost.is_finite() && best.as_ref().is_none_or(|b| sol.cost < b.cost) {
            best = Some(sol);
        }
    }
    let k = ly.info.count;
    let best = best.ok_or_else(|| {
        PartitionError::Infeasible(format!(
            "layered graph ({k} blocks of {} nodes): no plan fits the per-rank parameter budget{}",
            ly.info.nodes_per_layer,
            budgets
                .total
                .map(|b| format!(" of {} bytes", b.round()))
                .unwrap_or_default()
        ))
    })?;
    let runs: Vec<&SaturationStats> = pieces.stats.iter().collect();
    let extractor = Extractor::ChainDp {
        nodes_per_layer: ly.info.nodes_per_layer,
        blocks: ly.total_blocks(),
        phases: pieces.stacks[0].block.len(),
        stream_layouts: pieces.stacks[0].layouts.len(),
    };
    let cost = best.cost;
    Ok(Solved {
        sel: best.sel,
        cost,
        lower_bound: lower_bound.min(cost),
        stats: search_stats(&runs, extractor, cost, lower_bound.min(cost)),
        saturate_ms: runs.iter().map(|s| s.saturate_ms).sum(),
    })
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

/// Plan statistics over the e-graph runs `runs`: sizes summed, the most iterations, the worst
/// stop reason, the search limits, and the relative gap between `cost` and `lower_bound`.
fn search_stats(
    runs: &[&SaturationStats],
    extractor: Extractor,
    cost: f64,
    lower_bound: f64,
) -> SearchStats {
    SearchStats {
        eclasses: runs.iter().map(|s| s.eclasses).sum(),
        enodes: runs.iter().map(|s| s.enodes).sum(),
        iterations: runs.iter().map(|s| s.iterations).max().unwrap_or(0),
        stop_reason: StopReason::worst(runs.iter().map(|s| &s.stop_reason)),
        limits: super::segment::LIMITS,
        extractor,
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
    if let Some(ly) = layers {
        return solve_layered(cx, ly, budgets, model, mode);
    }
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
        open: None,
        charges: BTreeMap::new(),
        fixed_weights: BTreeMap::new(),
    };
    let sol =
        solve(cx, &spec, model, mode, pins).map_err(|e| infeasible(e, "graph", spec.budget))?;
    let stats = search_stats(
        &[&sol.stats],
        Extractor::FrontierDp,
        sol.cost,
        sol.lower_bound,
    );
    Ok(Solved {
        sel: sol.sel,
        cost: sol.cost,
        lower_bound: sol.lower_bound,
        stats,
        saturate_ms: sol.stats.saturate_ms,
    })
}
