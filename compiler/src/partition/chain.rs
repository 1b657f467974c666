//! Solving a graph with repeated layers: prologue, one representative block per phase, epilogue,
//! then an exact DP over the chain of blocks.
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
//! The result is exact given the per-block budget shares and replicated globals.
use super::budget::Budgets;
use super::egraph::Key;
use super::extract::ExtractError;
use super::layers::Layers;
use super::rules::RuleCx;
use super::segment::{
    solve, solve_variants, CostMode, SaturationStats, SegmentSpec, Selection, VariantSolution,
};
use super::{PartitionError, Solved};
use std::collections::BTreeMap;
use tessera_ir::plan::{CostModel, Extractor, SearchStats, StopReason};
use tessera_ir::{Layout, NodeId, TensorId, TensorKind};

/// Layouts considered for a stream tensor.
pub fn stream_layouts(cx: &RuleCx, t: TensorId) -> Vec<Layout> {
    let info = cx.g.tensor(t);
    if info.kind == TensorKind::Input || cx.n == 1 {
        return vec![Layout::Replicated];
    }
    let mut v = vec![Layout::Replicated];
    v.extend(
        (0..info.shape.len())
            .filter(|&a| info.shape[a] > 1 && cx.grains.bounds(info.shape[a], cx.n).is_some())
            .map(Layout::Split),
    );
    if info.dtype.is_float() {
        v.push(Layout::Partial);
    }
    v
}

/// Prologue and epilogue programs for one choice of layouts of the weights they both read.
pub struct Ends {
    /// Prologue programs by stream layout index (None: infeasible).
    pub prologue: Vec<Option<VariantSolution>>,
    /// Epilogue programs by stream layout index.
    pub epilogue: Vec<Option<VariantSolution>>,
}

/// Solved pieces of a layered graph, before assembling.
pub struct Chain {
    /// Block programs `[phase][in][out]`.
    pub block: Vec<Vec<Vec<Option<VariantSolution>>>>,
    /// Prologue and epilogue, once per layout choice of the weights both read
    /// ([`shared_end_choices`]).
    pub ends: Vec<Ends>,
    /// Stream layouts.
    pub layouts: Vec<Layout>,
    /// Runner statistics of the three solved segments.
    pub stats: Vec<SaturationStats>,
}

fn outputs_in(cx: &RuleCx, nodes: &[NodeId]) -> Vec<Key> {
    let set: std::collections::BTreeSet<NodeId> = nodes.iter().copied().collect();
    cx.g.outputs
        .iter()
        .filter(|t| cx.producers[t.index()].is_some_and(|p| set.contains(&p)))
        .map(|t| Key::Avail(*t, Layout::Replicated))
        .collect()
}

/// Solves prologue, representative block and epilogue for every stream layout.
pub fn solve_pieces(
    cx: &RuleCx,
    ly: &Layers,
    budgets: &Budgets,
    model: &CostModel,
    mode: CostMode,
) -> Chain {
    let g = cx.g;
    let m = ly.info.nodes_per_layer;
    let k = ly.info.count;
    let x0 = ly.streams[0];
    let x1 = ly.streams[1];
    let xk = ly.streams[k];
    let layouts = stream_layouts(cx, x1);
    let globals: BTreeMap<TensorId, Layout> = ly
        .globals
        .iter()
        .map(|t| (*t, Layout::Replicated))
        .collect();
    let mut stats = Vec::new();
    // Each weight's bytes are charged to the segments that read it in equal parts.
    let blocks: Vec<Vec<NodeId>> = (0..k)
        .map(|j| {
            (ly.starts[j]..ly.starts[j] + m)
                .map(|i| NodeId(i as u32))
                .collect()
        })
        .collect();
    let mut segments: Vec<&[NodeId]> = vec![&ly.prologue];
    segments.extend(blocks.iter().map(Vec::as_slice));
    segments.push(&ly.epilogue);
    let charges = Budgets::shared_charges(g, &segments);
    // Representative blocks, one per phase: stream input open, output in each layout.
    let solve_block = |r: usize| {
        let block_nodes = &blocks[r];
        // Every stream has x1's shape, so x1's layouts serve each block's input (block 0's
        // may be a graph input, only R then: the prologue vector says so).
        let (x_in, x_out) = (ly.streams[r], ly.streams[r + 1]);
        let in_layouts = layouts.clone();
        let spec = SegmentSpec {
            nodes: block_nodes.clone(),
            boundary: globals.clone(),
            roots: vec![],
            budget: budgets.for_nodes(g, block_nodes, &charges),
            open: Some((x_in, in_layouts.clone())),
            charges: charges.clone(),
            fixed_weights: BTreeMap::new(),
        };
        let variants: Vec<Vec<Key>> = layouts.iter().map(|l| vec![Key::Prod(x_out, *l)]).collect();
        let (sols, st) = solve_variants(cx, &spec, &variants, model, mode);
        // Transpose to [in][out] over `layouts` (inputs missing from in_layouts: None).
        let matrix: Vec<Vec<Option<VariantSolution>>> = layouts
            .iter()
            .map(|li| {
                let idx = in_layouts.iter().position(|l| l == li);
                sols.iter()
                    .map(|row| idx.and_then(|i| row[i].clone()))
                    .collect()
            })
            .collect();
        (matrix, st)
    };
    // Prologue: produce x0 in each layout, globals replicated.
    let solve_prologue = |fixed: &BTreeMap<TensorId, Layout>| {
        if ly.prologue.is_empty() || g.tensor(x0).kind != TensorKind::Activation {
            let free = layouts
                .iter()
                .map(|l| {
                    (*l == Layout::Replicated).then(|| VariantSolution {
                        cost: 0.0,
                        lower: 0.0,
                        sel: Selection::default(),
                    })
                })
                .collect();
            return (free, None);
        }
        let mut roots: Vec<Key> = ly
            .globals
            .iter()
            .map(|t| Key::Prod(*t, Layout::Replicated))
            .collect();
        roots.extend(outputs_in(cx, &ly.prologue));
        let spec = SegmentSpec {
            nodes: ly.prologue.clone(),
            boundary: BTreeMap::new(),
            roots,
            budget: budgets.for_nodes(g, &ly.prologue, &charges),
            open: None,
            charges: charges.clone(),
            fixed_weights: fixed.clone(),
        };
        let variants: Vec<Vec<Key>> = layouts.iter().map(|l| vec![Key::Prod(x0, *l)]).collect();
        let (sols, st) = solve_variants(cx, &spec, &variants, model, mode);
        let sols: Vec<Option<VariantSolution>> =
            sols.into_iter().map(|mut v| v.remove(0)).collect();
        (sols, Some(st))
    };
    // Epilogue: x_k open in each layout.
    let solve_epilogue = |fixed: &BTreeMap<TensorId, Layout>| {
        let mut boundary = globals.clone();
        boundary.insert(xk, Layout::Replicated);
        let mut roots = outputs_in(cx, &ly.epilogue);
        if g.outputs.contains(&xk) {
            roots.push(Key::Avail(xk, Layout::Replicated));
        }
        let spec = SegmentSpec {
            nodes: ly.epilogue.clone(),
            boundary,
            roots,
            budget: budgets.for_nodes(g, &ly.epilogue, &charges),
            open: Some((xk, layouts.clone())),
            charges: charges.clone(),
            fixed_weights: fixed.clone(),
        };
        let (mut sols, st) = solve_variants(cx, &spec, &[vec![]], model, mode);
        (sols.remove(0), st)
    };
    // The pieces are independent solves: in parallel (each deterministic, collected in order).
    use rayon::prelude::*;
    let choices = shared_end_choices(cx, ly);
    let (solved_blocks, solved_ends) = rayon::join(
        || {
            (0..ly.phases.max(1))
                .into_par_iter()
                .map(solve_block)
                .collect::<Vec<_>>()
        },
        || {
            choices
                .par_iter()
                .map(|f| rayon::join(|| solve_prologue(f), || solve_epilogue(f)))
                .collect::<Vec<_>>()
        },
    );
    let mut block = Vec::with_capacity(solved_blocks.len());
    for (matrix, st) in solved_blocks {
        block.push(matrix);
        stats.push(st);
    }
    let mut ends = Vec::with_capacity(solved_ends.len());
    for ((prologue, pst), (epilogue, est)) in solved_ends {
        stats.extend(pst);
        stats.push(est);
        ends.push(Ends { prologue, epilogue });
    }
    Chain {
        block,
        ends,
        layouts,
        stats,
    }
}

/// Weights read by both the prologue and the epilogue whose layout is enumerated: the
/// largest [`MAX_TIED_WEIGHTS`] with a choice of layout.
pub const MAX_TIED_WEIGHTS: usize = 2;

/// The layout choices of the weights read by both the prologue and the epilogue (a tied
/// embedding and LM head): each is held once, so both ends are solved with it fixed to
/// one layout, once per combination (one empty choice when there are none). Solved apart,
/// the two ends would each pick their own layout and the plan would hold the weight twice.
pub fn shared_end_choices(cx: &RuleCx, ly: &Layers) -> Vec<BTreeMap<TensorId, Layout>> {
    let read = |nodes: &[NodeId]| super::budget::weights_read(cx.g, nodes);
    let epilogue = read(&ly.epilogue);
    let mut tied: Vec<(TensorId, Vec<Layout>)> = read(&ly.prologue)
        .into_iter()
        .filter(|t| epilogue.contains(t))
        .map(|t| {
            // Replicated or split (a key/value block converts to nothing else).
            let mut ls = super::segment::weight_layouts(cx, t);
            ls.retain(|l| matches!(l, Layout::Replicated | Layout::Split(_)));
            (t, ls)
        })
        .filter(|(_, ls)| ls.len() > 1)
        .collect();
    tied.sort_by_key(|(t, _)| std::cmp::Reverse(cx.g.weights[t].size_bytes()));
    tied.truncate(MAX_TIED_WEIGHTS);
    let mut choices = vec![BTreeMap::new()];
    for (t, ls) in tied {
        choices = choices
            .iter()
            .flat_map(|c| {
                ls.iter().map(move |l| {
                    let mut c = c.clone();
                    c.insert(t, *l);
                    c
                })
            })
            .collect();
    }
    choices
}

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

fn merge(into: &mut Selection, s: &Selection) {
    into.prod
        .extend(s.prod.iter().map(|(k, v)| (*k, v.clone())));
    into.avail.extend(s.avail.iter().map(|(k, v)| (*k, *v)));
}

/// Exact chain DP over the pieces' costs (`lower`: over their lower bounds) with the ends
/// `ends`; returns the total and the stream layout indices `L_0 ..= L_k`.
fn chain_dp(ch: &Chain, ends: &Ends, k: usize, lower: bool) -> Option<(f64, Vec<usize>)> {
    let nl = ch.layouts.len();
    let cost = |o: &Option<VariantSolution>| {
        o.as_ref()
            .map_or(f64::INFINITY, |v| if lower { v.lower } else { v.cost })
    };
    let mut f: Vec<f64> = ends.prologue.iter().map(cost).collect();
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(k);
    for j in 0..k {
        let mut nf = vec![f64::INFINITY; nl];
        let mut nb = vec![0; nl];
        for b in 0..nl {
            for (a, fa) in f.iter().enumerate() {
                let c = fa + cost(&ch.block[j % ch.block.len()][a][b]);
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
        let c = fa + cost(&ends.epilogue[a]);
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

/// The best chain over every choice of ends: (cost, ends index, path).
fn best_chain(ch: &Chain, k: usize, lower: bool) -> Option<(f64, usize, Vec<usize>)> {
    ch.ends
        .iter()
        .enumerate()
        .filter_map(|(i, e)| chain_dp(ch, e, k, lower).map(|(c, p)| (c, i, p)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Solves a layered graph: pieces, chain DP, and (model mode) the assembled selection.
pub fn solve_layered(
    cx: &RuleCx,
    ly: &Layers,
    budgets: &Budgets,
    model: &CostModel,
    mode: CostMode,
) -> Result<Solved, PartitionError> {
    let ch = solve_pieces(cx, ly, budgets, model, mode);
    let k = ly.info.count;
    // Each piece's bound is at most its cost, so the chain over bounds bounds the optimum.
    let lower_bound = best_chain(&ch, k, true).map_or(f64::INFINITY, |b| b.0);
    let (cost, end, path) = best_chain(&ch, k, false).ok_or_else(|| {
        PartitionError::Infeasible(format!(
            "layered graph ({k} blocks of {} nodes): no plan fits the per-rank parameter budget{}",
            ly.info.nodes_per_layer,
            budgets
                .total
                .map(|b| format!(" of {} bytes", b.round()))
                .unwrap_or_default()
        ))
    })?;
    let mut sel = Selection::default();
    if mode == CostMode::Model {
        let pick = |o: &Option<VariantSolution>| -> Result<Selection, PartitionError> {
            o.as_ref().map(|v| v.sel.clone()).ok_or_else(|| {
                PartitionError::Internal("chain DP picked an infeasible piece".into())
            })
        };
        merge(&mut sel, &pick(&ch.ends[end].prologue[path[0]])?);
        let q = ch.block.len();
        for j in 0..k {
            let r = j % q;
            let s = pick(&ch.block[r][path[j]][path[j + 1]])?;
            if j == r {
                merge(&mut sel, &s);
            } else {
                let shift = (ly.starts[j] - ly.starts[r]) as u32;
                merge(&mut sel, &map_selection(&s, &block_map(ly, r, j), shift));
            }
        }
        merge(&mut sel, &pick(&ch.ends[end].epilogue[path[k]])?);
    }
    let runs: Vec<&SaturationStats> = ch.stats.iter().collect();
    let extractor = Extractor::ChainDp {
        nodes_per_layer: ly.info.nodes_per_layer,
        blocks: k,
        phases: ch.block.len(),
        stream_layouts: ch.layouts.len(),
    };
    Ok(Solved {
        sel,
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
