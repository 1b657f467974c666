//! The pieces of a layered graph, solved apart: each stack's representative blocks, and
//! the pieces around the stacks — the innermost prologue, the links between stacks (what
//! leads from one stack's last block to the next stack's stream input: an encoder's final
//! norm and a decoder's embedding) and the outermost epilogue.
//!
//! A stack's block is solved once per phase with its stream input open and its stream
//! output demanded in each layout: a matrix `[in][out]` over the stack's stream layouts. A
//! link is the same kind of matrix, from the inner stack's layouts to the outer stack's.
//! The innermost prologue produces the innermost stream in each layout; the epilogue reads
//! the outermost stream in each. Globals (activations produced before a stack and read by
//! its blocks) are produced replicated by the piece that computes them.
use super::budget::Budgets;
use super::egraph::Key;
use super::layers::Layers;
use super::rules::RuleCx;
use super::segment::{
    solve_variants, CostMode, SaturationStats, SegmentSpec, Selection, VariantSolution,
};
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::plan::{CostModel, StopReason};
use tessera_ir::{Layout, NodeId, TensorId, TensorKind};

/// Programs of a piece from one stream layout (rows) to another (columns).
pub type Matrix = Vec<Vec<Option<VariantSolution>>>;

/// One stack's solved blocks.
pub struct StackBlocks {
    /// Its stream layouts.
    pub layouts: Vec<Layout>,
    /// Block programs `[phase][in][out]`.
    pub block: Vec<Matrix>,
}

/// The pieces around the stacks, for one choice of the layouts of the weights they share.
pub struct Ends {
    /// The innermost prologue's programs, by the innermost stream's layout.
    pub front: Vec<Option<VariantSolution>>,
    /// `links[i]`: from stack `i + 1`'s output layouts to stack `i`'s input layouts
    /// (stacks outermost first, as [`Layers::levels`]).
    pub links: Vec<Matrix>,
    /// The outermost epilogue's programs, by the outermost stream's layout.
    pub epilogue: Vec<Option<VariantSolution>>,
}

/// Solved pieces of a layered graph, before the chain DP.
pub struct Pieces {
    /// Each stack's blocks, outermost first.
    pub stacks: Vec<StackBlocks>,
    /// The ends, once per layout choice of the weights they share ([`shared_end_choices`]).
    pub ends: Vec<Ends>,
    /// Runner statistics of every solved segment.
    pub stats: Vec<SaturationStats>,
}

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

fn outputs_in(cx: &RuleCx, nodes: &[NodeId]) -> Vec<Key> {
    let set: BTreeSet<NodeId> = nodes.iter().copied().collect();
    cx.g.outputs
        .iter()
        .filter(|t| cx.producers[t.index()].is_some_and(|p| set.contains(&p)))
        .map(|t| Key::Avail(*t, Layout::Replicated))
        .collect()
}

fn replicated(ts: &BTreeSet<TensorId>) -> BTreeMap<TensorId, Layout> {
    ts.iter().map(|t| (*t, Layout::Replicated)).collect()
}

/// The blocks of stack `ly`.
fn blocks_of(ly: &Layers) -> Vec<Vec<NodeId>> {
    (0..ly.starts.len())
        .map(|j| {
            let own = ly.own_nodes.get(j).map_or(&[][..], Vec::as_slice);
            own.iter()
                .copied()
                .chain(ly.block_range(j).map(|i| NodeId(i as u32)))
                .collect()
        })
        .collect()
}

/// Every piece in order (the innermost prologue, then per stack from the innermost its
/// blocks and its epilogue: a link, or the outermost epilogue).
fn segments(levels: &[&Layers]) -> Vec<Vec<NodeId>> {
    let mut out = vec![levels[levels.len() - 1].prologue.clone()];
    for ly in levels.iter().rev() {
        out.extend(blocks_of(ly));
        out.push(ly.epilogue.clone());
    }
    out
}

/// The pieces that are not blocks (the innermost prologue, the links, the epilogue).
fn end_segments<'a>(levels: &[&'a Layers]) -> Vec<&'a [NodeId]> {
    let mut out = vec![levels[levels.len() - 1].prologue.as_slice()];
    out.extend(levels.iter().rev().map(|ly| ly.epilogue.as_slice()));
    out
}

/// Weights read by two or more of the pieces around the stacks whose layout is enumerated:
/// the largest [`MAX_TIED_WEIGHTS`] with a choice of layout.
pub const MAX_TIED_WEIGHTS: usize = 2;

/// The layout choices of the weights read by two or more of the pieces around the stacks
/// (a tied embedding and LM head; an encoder's and a decoder's shared embedding): each is
/// held once, so those pieces are solved with it fixed to one layout, once per combination
/// (one empty choice when there are none). Solved apart, the pieces would each pick their
/// own layout and the plan would hold the weight twice.
pub fn shared_end_choices(cx: &RuleCx, ly: &Layers) -> Vec<BTreeMap<TensorId, Layout>> {
    let levels = ly.levels();
    let mut readers: BTreeMap<TensorId, usize> = BTreeMap::new();
    for seg in end_segments(&levels) {
        for t in super::budget::weights_read(cx.g, seg) {
            *readers.entry(t).or_default() += 1;
        }
    }
    let mut tied: Vec<(TensorId, Vec<Layout>)> = readers
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(t, _)| {
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

/// What every piece's solve shares.
struct Cx<'a> {
    cx: &'a RuleCx<'a>,
    budgets: &'a Budgets,
    charges: BTreeMap<TensorId, f64>,
    /// Weights every piece loads in one layout ([`shared_small`]).
    shared: BTreeMap<TensorId, Layout>,
    model: &'a CostModel,
    mode: CostMode,
}

impl Cx<'_> {
    fn spec(
        &self,
        nodes: &[NodeId],
        boundary: BTreeMap<TensorId, Layout>,
        roots: Vec<Key>,
        open: Option<(TensorId, Vec<Layout>)>,
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> SegmentSpec {
        let charges = &self.charges;
        let mut fixed_weights = self.shared.clone();
        fixed_weights.extend(fixed.iter().map(|(t, l)| (*t, *l)));
        SegmentSpec {
            nodes: nodes.to_vec(),
            boundary,
            roots,
            budget: self.budgets.for_nodes(self.cx.g, nodes, charges),
            open,
            charges: charges.clone(),
            fixed_weights,
        }
    }

    /// A piece with `x_in` open over `in_ls` and `x_out` produced in each of `out_ls`:
    /// `[in][out]`.
    fn matrix(
        &self,
        spec: &SegmentSpec,
        in_ls: &[Layout],
        x_out: TensorId,
        out_ls: &[Layout],
    ) -> (Matrix, SaturationStats) {
        let variants: Vec<Vec<Key>> = out_ls.iter().map(|l| vec![Key::Prod(x_out, *l)]).collect();
        let (sols, st) = solve_variants(self.cx, spec, &variants, self.model, self.mode);
        // Transpose to [in][out].
        let matrix = (0..in_ls.len())
            .map(|i| sols.iter().map(|row| row[i].clone()).collect())
            .collect();
        (matrix, st)
    }

    /// Representative block `r` of stack `ly`: stream input open, output in each layout.
    fn block(&self, ly: &Layers, ls: &[Layout], r: usize) -> (Matrix, SaturationStats) {
        use rayon::prelude::*;
        let nodes = &blocks_of(ly)[r];
        // Every stream has x1's shape, so x1's layouts serve each block's input.
        let (x_in, x_out) = (ly.streams[r], ly.streams[r + 1]);
        // A large block with cuts inside: a chain of its parts (repeated blocks only; a
        // chain's blocks are cut already).
        let cuts = if ly.info.blocks_differ {
            Vec::new()
        } else {
            super::subchain::cuts(self.cx.g, nodes, x_in, x_out)
        };
        let s = nodes[0].index();
        let mut bounds: Vec<(usize, TensorId)> = vec![(s, x_in)];
        bounds.extend(cuts);
        bounds.push((s + nodes.len(), x_out));
        let parts: Vec<(Matrix, SaturationStats)> = bounds
            .par_windows(2)
            .map(|w| {
                let ((from, t_in), (to, t_out)) = (w[0], w[1]);
                let part = &nodes[from - s..to - s];
                let spec = self.spec(
                    part,
                    replicated(&ly.globals),
                    vec![],
                    Some((t_in, ls.to_vec())),
                    &BTreeMap::new(),
                );
                self.matrix(&spec, ls, t_out, ls)
            })
            .collect();
        let mut parts = parts.into_iter();
        // bounds has at least two entries: one part at least.
        let (mut matrix, mut stats) = parts.next().expect("a block has a part");
        for (m, st) in parts {
            matrix = super::subchain::compose(&matrix, &m);
            stats.eclasses += st.eclasses;
            stats.enodes += st.enodes;
            stats.iterations = stats.iterations.max(st.iterations);
            stats.stop_reason = StopReason::worst([&stats.stop_reason, &st.stop_reason]);
            stats.saturate_ms += st.saturate_ms;
        }
        (matrix, stats)
    }

    /// The innermost prologue: its stream in each layout, globals replicated.
    fn front(
        &self,
        ly: &Layers,
        ls: &[Layout],
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> (Vec<Option<VariantSolution>>, Option<SaturationStats>) {
        let g = self.cx.g;
        let x0 = ly.streams[0];
        if ly.prologue.is_empty() || g.tensor(x0).kind != TensorKind::Activation {
            let free = ls
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
        roots.extend(outputs_in(self.cx, &ly.prologue));
        let spec = self.spec(&ly.prologue, BTreeMap::new(), roots, None, fixed);
        let (m, st) = self.matrix(&spec, &[Layout::Replicated], x0, ls);
        (m.into_iter().next().unwrap_or_default(), Some(st))
    }

    /// The link from stack `inner` (layouts `in_ls`) to stack `outer` (layouts `out_ls`):
    /// `inner`'s epilogue, which also produces the outer globals it computes (and the
    /// inner stream's output, when the outer blocks read it) replicated.
    fn link(
        &self,
        inner: &Layers,
        in_ls: &[Layout],
        outer: &Layers,
        out_ls: &[Layout],
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> (Matrix, Option<SaturationStats>) {
        let xk = inner.streams[inner.info.count];
        let x0 = outer.streams[0];
        if inner.epilogue.is_empty() {
            // The inner stack's output is the outer stream: kept as produced.
            let m = in_ls
                .iter()
                .map(|a| {
                    out_ls
                        .iter()
                        .map(|b| {
                            (xk == x0 && a == b).then(|| VariantSolution {
                                cost: 0.0,
                                lower: 0.0,
                                sel: Selection::default(),
                            })
                        })
                        .collect()
                })
                .collect();
            return (m, None);
        }
        let inside: BTreeSet<NodeId> = inner.epilogue.iter().copied().collect();
        let made_here = |t: &TensorId| {
            *t == xk || self.cx.producers[t.index()].is_some_and(|p| inside.contains(&p))
        };
        let globals: Vec<Key> = outer
            .globals
            .iter()
            .filter(|t| made_here(t))
            .map(|t| Key::Prod(*t, Layout::Replicated))
            .collect();
        let spec = self.after_stack(inner, in_ls, globals, fixed);
        let (m, st) = self.matrix(&spec, in_ls, x0, out_ls);
        (m, Some(st))
    }

    /// The epilogue of stack `ly` (a link, or the outermost epilogue) with the stack's
    /// output open over `ls`: the graph outputs it computes (the stream's, if one) and
    /// `roots` demanded.
    fn after_stack(
        &self,
        ly: &Layers,
        ls: &[Layout],
        mut roots: Vec<Key>,
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> SegmentSpec {
        let xk = ly.streams[ly.info.count];
        let mut boundary = replicated(&ly.globals);
        boundary.insert(xk, Layout::Replicated);
        roots.extend(outputs_in(self.cx, &ly.epilogue));
        if self.cx.g.outputs.contains(&xk) {
            roots.push(Key::Avail(xk, Layout::Replicated));
        }
        self.spec(
            &ly.epilogue,
            boundary,
            roots,
            Some((xk, ls.to_vec())),
            fixed,
        )
    }

    /// The outermost epilogue, its stream input open.
    fn epilogue(
        &self,
        ly: &Layers,
        ls: &[Layout],
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> (Vec<Option<VariantSolution>>, SaturationStats) {
        let spec = self.after_stack(ly, ls, vec![], fixed);
        let (mut sols, st) = solve_variants(self.cx, &spec, &[vec![]], self.model, self.mode);
        (sols.remove(0), st)
    }

    /// The pieces around the stacks for one choice `fixed` of shared weights' layouts.
    fn ends(
        &self,
        levels: &[&Layers],
        layouts: &[Vec<Layout>],
        fixed: &BTreeMap<TensorId, Layout>,
    ) -> (Ends, Vec<SaturationStats>) {
        use rayon::prelude::*;
        let last = levels.len() - 1;
        let ((front, fst), ((epilogue, est), links)) = rayon::join(
            || self.front(levels[last], &layouts[last], fixed),
            || {
                rayon::join(
                    || self.epilogue(levels[0], &layouts[0], fixed),
                    || {
                        (0..last)
                            .into_par_iter()
                            .map(|i| {
                                let (inner, outer) = (levels[i + 1], levels[i]);
                                self.link(inner, &layouts[i + 1], outer, &layouts[i], fixed)
                            })
                            .collect::<Vec<_>>()
                    },
                )
            },
        );
        let mut stats: Vec<SaturationStats> = fst.into_iter().collect();
        stats.push(est);
        let mut ms = Vec::with_capacity(links.len());
        for (m, st) in links {
            ms.push(m);
            stats.extend(st);
        }
        let ends = Ends {
            front,
            links: ms,
            epilogue,
        };
        (ends, stats)
    }
}

/// Where the blocks differ ([`super::cuts`]), each block is solved on its own, so a weight
/// several pieces read could be loaded in one layout by one and another by the next, and
/// held twice (a mask's position table read by the prologue and one block: 8 KiB over a
/// Cohere-2 export's budget, which then fell back to a whole-graph solve). The small ones
/// (not [`super::budget::large_weights`]: replicated in any plan's budget) are loaded
/// replicated by every piece; a piece that wants a slice cuts it locally. Repeated blocks
/// share one representative's choice, so nothing is fixed there.
fn shared_small(cx: &RuleCx, ly: &Layers, segs: &[&[NodeId]]) -> BTreeMap<TensorId, Layout> {
    if !ly.info.blocks_differ {
        return BTreeMap::new();
    }
    let large = super::budget::large_weights(cx.g);
    let mut readers: BTreeMap<TensorId, usize> = BTreeMap::new();
    for seg in segs {
        for t in super::budget::weights_read(cx.g, seg) {
            *readers.entry(t).or_default() += 1;
        }
    }
    readers
        .into_iter()
        .filter(|(t, c)| *c > 1 && !large.contains(t))
        .map(|(t, _)| (t, Layout::Replicated))
        .collect()
}

/// Solves every stack's representative blocks and, per choice of shared weights' layouts,
/// the pieces around the stacks.
pub fn solve_pieces(
    cx: &RuleCx,
    ly: &Layers,
    budgets: &Budgets,
    model: &CostModel,
    mode: CostMode,
) -> Pieces {
    use rayon::prelude::*;
    let levels = ly.levels();
    let segs = segments(&levels);
    let seg_refs: Vec<&[NodeId]> = segs.iter().map(Vec::as_slice).collect();
    // Each weight's bytes are charged to the segments that read it in equal parts.
    let pcx = Cx {
        cx,
        budgets,
        charges: Budgets::shared_charges(cx.g, &seg_refs),
        shared: shared_small(cx, ly, &seg_refs),
        model,
        mode,
    };
    let layouts: Vec<Vec<Layout>> = levels
        .iter()
        .map(|l| stream_layouts(cx, l.streams[1]))
        .collect();
    let jobs: Vec<(usize, usize)> = levels
        .iter()
        .enumerate()
        .flat_map(|(i, l)| (0..l.phases.max(1)).map(move |r| (i, r)))
        .collect();
    let choices = shared_end_choices(cx, ly);
    // The pieces are independent solves: in parallel (each deterministic, collected in order).
    let (solved_blocks, solved_ends) = rayon::join(
        || {
            jobs.par_iter()
                .map(|&(i, r)| pcx.block(levels[i], &layouts[i], r))
                .collect::<Vec<_>>()
        },
        || {
            choices
                .par_iter()
                .map(|f| pcx.ends(&levels, &layouts, f))
                .collect::<Vec<_>>()
        },
    );
    let mut stacks: Vec<StackBlocks> = layouts
        .into_iter()
        .map(|layouts| StackBlocks {
            layouts,
            block: Vec::new(),
        })
        .collect();
    let mut stats = Vec::new();
    for (&(i, _), (matrix, st)) in jobs.iter().zip(solved_blocks) {
        stacks[i].block.push(matrix);
        stats.push(st);
    }
    let mut ends = Vec::with_capacity(solved_ends.len());
    for (e, st) in solved_ends {
        ends.push(e);
        stats.extend(st);
    }
    Pieces {
        stacks,
        ends,
        stats,
    }
}
