//! Repeated-layer detection.
//!
//! Nodes are in topological order. Every node gets a local signature (op and attributes,
//! input kinds/shapes/dtypes, output shapes). Candidate periods `m` are the spacings of
//! equal signatures; for each, the longest run with `sig[i] == sig[i + m]` bounds the
//! repeated region. Every phase of the period inside the run is then validated exactly:
//! block `j` (nodes `p0 + j·m ..`) must match block 0 node by node with the same relative
//! wiring — an input produced inside the block comes from the same offset and output
//! index; a weight has the same shape and dtype (weights map one to one); any other
//! input is either the *same* tensor in every block (a global: masks, rotary tables,
//! graph inputs) or the block's *stream input*, the single tensor that block `j − 1`
//! hands on (the residual stream). A block may hand on nothing but its stream output,
//! which only the next block (or, for the last block, the epilogue / graph outputs)
//! reads. The cut between two blocks is therefore a one-tensor articulation of the node
//! order, apart from the globals.
//!
//! Layers of one structure may read different globals in turn: Gemma-2 alternates a
//! sliding-window and a full attention mask, Gemma-3 has five sliding layers to one full.
//! Blocks then have `phases` q > 1: block j reads the globals of block `j mod q`, and the
//! search solves one representative block per phase.
//!
//! A model may hold several stacks in turn: an encoder's layers, then a decoder's (T5, BART,
//! Whisper). The last stack found is the outer one; an earlier stack lies in its prologue
//! and is found there the same way ([`Layers::inner`], nested as deep as there are stacks).
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use tessera_ir::plan::{LayerInfo, LayerStack};
use tessera_ir::{Graph, NodeId, TensorId, TensorKind};

/// Repeated blocks of a graph.
#[derive(Debug, Clone)]
pub struct Layers {
    /// For the plan.
    pub info: LayerInfo,
    /// Nodes before the first block.
    pub prologue: Vec<NodeId>,
    /// First node of each block; block j runs up to the next block's start (the last one
    /// up to [`Layers::stop`]). Repeated blocks are `nodes_per_layer` nodes each.
    pub starts: Vec<usize>,
    /// Position one past the last block.
    pub stop: usize,
    /// Nodes before the first block that each block computes itself (where the blocks
    /// differ, [`super::cuts`]: what only that block reads); empty for repeated blocks.
    pub own_nodes: Vec<Vec<NodeId>>,
    /// Nodes after the last block, led by prologue nodes computed from weights alone and
    /// read only by them (in topological order).
    pub epilogue: Vec<NodeId>,
    /// Stream tensor entering each block, then the last block's stream output:
    /// `streams[j]` enters block j, `streams[count]` leaves the last block.
    pub streams: Vec<TensorId>,
    /// Tensors (activations) produced before the first block and read by the blocks.
    pub globals: BTreeSet<TensorId>,
    /// Blocks `j` and `j + phases` read the same globals; blocks `0 .. phases` are the
    /// representatives (1: every block reads the same globals; the block count where the
    /// blocks differ, [`super::cuts`]).
    pub phases: usize,
    /// For each block j ≥ 1, the map of block-0 tensors to block-j tensors (weights,
    /// tensors produced in the block, the stream input); globals map to themselves. Empty
    /// where the blocks differ (each is its own representative).
    pub tensor_maps: Vec<BTreeMap<TensorId, TensorId>>,
    /// An earlier stack of repeated blocks inside [`Layers::prologue`] (an encoder before a
    /// decoder). Its own prologue and blocks are nodes of this prologue, and its epilogue is
    /// the rest of this prologue (what leads from its last block to this stream's input).
    pub inner: Option<Box<Layers>>,
}

impl Layers {
    /// Position one past the last block.
    pub fn end(&self) -> usize {
        self.stop
    }

    /// The positions of block `j`'s nodes.
    pub fn block_range(&self, j: usize) -> std::ops::Range<usize> {
        self.starts[j]..self.starts.get(j + 1).copied().unwrap_or(self.stop)
    }

    /// Nodes in the blocks (a chain's blocks with their own nodes).
    pub fn block_nodes_count(&self) -> usize {
        self.stop - self.starts.first().copied().unwrap_or(self.stop)
            + self.own_nodes.iter().map(Vec::len).sum::<usize>()
    }

    /// Every node of the blocks, in order.
    pub fn block_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        (self.starts[0]..self.end()).map(|i| NodeId(i as u32))
    }

    /// This stack and the stacks nested in its prologue, outermost first.
    pub fn levels(&self) -> Vec<&Layers> {
        let mut v = vec![self];
        while let Some(i) = &v[v.len() - 1].inner {
            v.push(i);
        }
        v
    }

    /// The stacks' blocks counted over every level.
    pub fn total_blocks(&self) -> usize {
        self.levels().iter().map(|l| l.info.count).sum()
    }

    /// The plan's record of every stack: layers numbered in graph order (the innermost
    /// stack's first), each stack listed where there are several.
    pub fn plan_info(&self) -> LayerInfo {
        let levels = self.levels();
        if levels.len() == 1 {
            return self.info.clone();
        }
        let mut node_layer = vec![None; self.info.node_layer.len()];
        let mut stacks = Vec::with_capacity(levels.len());
        let mut first = 0u32;
        for ly in levels.iter().rev() {
            for (slot, l) in node_layer.iter_mut().zip(&ly.info.node_layer) {
                if let Some(l) = l {
                    *slot = Some(first + l);
                }
            }
            stacks.push(LayerStack {
                first,
                count: ly.info.count,
                nodes_per_layer: ly.info.nodes_per_layer,
            });
            first += ly.info.count as u32;
        }
        LayerInfo {
            count: first as usize,
            nodes_per_layer: self.info.nodes_per_layer,
            blocks_differ: self.info.blocks_differ,
            node_layer,
            stacks,
        }
    }

    /// `inner` (found among the nodes before this stack's first block) fitted into this
    /// prologue: its prologue keeps only this prologue's nodes (those that sink into this
    /// epilogue leave it), and its epilogue becomes the rest of this prologue.
    fn nest(&mut self, mut inner: Layers) {
        let outer: BTreeSet<NodeId> = self.prologue.iter().copied().collect();
        inner.prologue.retain(|n| outer.contains(n));
        let front: BTreeSet<NodeId> = inner
            .prologue
            .iter()
            .copied()
            .chain(inner.block_nodes())
            .collect();
        inner.epilogue = self
            .prologue
            .iter()
            .copied()
            .filter(|n| !front.contains(n))
            .collect();
        self.inner = Some(Box::new(inner));
    }
}

fn signatures(g: &Graph) -> Vec<u64> {
    g.nodes
        .iter()
        .map(|nd| {
            let mut h = DefaultHasher::new();
            format!("{:?}", nd.op).hash(&mut h);
            for &i in &nd.inputs {
                let t = g.tensor(i);
                (t.kind == TensorKind::Weight, &t.shape, t.dtype as u8).hash(&mut h);
            }
            for &o in &nd.outputs {
                (&g.tensor(o).shape, g.tensor(o).dtype as u8).hash(&mut h);
            }
            h.finish()
        })
        .collect()
}

/// Candidate (period, run start, run length), best coverage first.
fn candidates(sig: &[u64]) -> Vec<(usize, usize, usize)> {
    let n = sig.len();
    let mut last: BTreeMap<u64, usize> = BTreeMap::new();
    let mut periods = BTreeSet::new();
    for (i, &h) in sig.iter().enumerate() {
        if let Some(p) = last.insert(h, i) {
            if i - p <= n / 2 {
                periods.insert(i - p);
            }
        }
    }
    let mut out = Vec::new();
    for m in periods {
        let (mut best, mut run, mut start) = ((0, 0), 0, 0);
        for i in 0..n - m {
            if sig[i] == sig[i + m] {
                if run == 0 {
                    start = i;
                }
                run += 1;
                if run > best.1 {
                    best = (start, run);
                }
            } else {
                run = 0;
            }
        }
        if best.1 >= m {
            out.push((m, best.0, best.1));
        }
    }
    // Most covered nodes first, then the shorter period.
    out.sort_by_key(|&(m, _, r)| (std::cmp::Reverse((r / m + 1) * m), m));
    out
}

/// The graph's node order, as detection reads it.
pub(super) struct Cx<'a> {
    pub(super) g: &'a Graph,
    sig: Vec<u64>,
    /// Position of the producer of each tensor (None: weight or graph input).
    pub(super) prod: Vec<Option<usize>>,
    /// Positions of the consumers of each tensor.
    pub(super) users: Vec<Vec<usize>>,
    /// The graph's outputs.
    pub(super) outputs: BTreeSet<TensorId>,
}

impl Cx<'_> {
    /// Prologue nodes (before `p0`) computed from weights alone and read only after the
    /// blocks (ending at `end`): a tied LM head's transposed table. They belong to the
    /// epilogue: handed on as globals they would be produced replicated, and the weight
    /// gathered whole for them.
    pub(super) fn sunk(&self, p0: usize, end: usize) -> BTreeSet<usize> {
        let g = self.g;
        let mut from_weights: BTreeSet<usize> = BTreeSet::new();
        for pos in 0..p0 {
            let nd = &g.nodes[pos];
            if !nd.inputs.is_empty()
                && nd.inputs.iter().all(|t| {
                    g.tensor(*t).kind == TensorKind::Weight
                        || self.prod[t.index()].is_some_and(|q| from_weights.contains(&q))
                })
            {
                from_weights.insert(pos);
            }
        }
        // Backwards, so that a chain of such nodes sinks whole.
        let mut sunk = BTreeSet::new();
        for pos in (0..p0).rev().filter(|p| from_weights.contains(p)) {
            let read_after = g.nodes[pos].outputs.iter().all(|o| {
                let users = &self.users[o.index()];
                !self.outputs.contains(o)
                    && !users.is_empty()
                    && users.iter().all(|&u| u >= end || sunk.contains(&u))
            });
            if read_after {
                sunk.insert(pos);
            }
        }
        sunk
    }

    /// Validates `k` blocks of `m` nodes from `p0` in `q` phases; returns the layers on
    /// success.
    fn validate(&self, p0: usize, m: usize, k: usize, q: usize) -> Option<Layers> {
        let g = self.g;
        let n = g.nodes.len();
        let end = p0 + k * m;
        let inside =
            |t: TensorId, s: usize| self.prod[t.index()].is_some_and(|p| p >= s && p < s + m);
        // Stream output of block 0: the one tensor read after the block.
        let escapes = |s: usize| -> Vec<(usize, usize)> {
            let mut v = Vec::new();
            for pos in s..s + m {
                for (oi, &o) in g.nodes[pos].outputs.iter().enumerate() {
                    if self.outputs.contains(&o)
                        || self.users[o.index()].iter().any(|&u| u >= s + m)
                    {
                        v.push((pos - s, oi));
                    }
                }
            }
            v
        };
        let esc0 = escapes(p0);
        let [(s_off, s_out)] = esc0[..] else {
            return None;
        };
        let stream_out = |j: usize| g.nodes[p0 + j * m + s_off].outputs[s_out];
        let mut streams = vec![TensorId(u32::MAX); k + 1];
        let mut globals = BTreeSet::new();
        // Per phase, block 0's global → the phase's (identity for phase 0).
        let mut phase_globals: Vec<BTreeMap<TensorId, TensorId>> = vec![BTreeMap::new(); q];
        let mut maps = Vec::with_capacity(k.saturating_sub(1));
        for j in 1..k {
            let sj = p0 + j * m;
            if escapes(sj) != esc0 {
                return None;
            }
            // The previous stream is read only by this block.
            let prev = stream_out(j - 1);
            if self.outputs.contains(&prev)
                || self.users[prev.index()]
                    .iter()
                    .any(|&u| u < sj || u >= sj + m)
            {
                return None;
            }
            let mut map: BTreeMap<TensorId, TensorId> = BTreeMap::new();
            for off in 0..m {
                let (a, b) = (&g.nodes[p0 + off], &g.nodes[sj + off]);
                if self.sig[p0 + off] != self.sig[sj + off] || a.op != b.op {
                    return None;
                }
                for (oa, ob) in a.outputs.iter().zip(&b.outputs) {
                    map.insert(*oa, *ob);
                }
                for (&ta, &tb) in a.inputs.iter().zip(&b.inputs) {
                    let ok =
                        match g.tensor(ta).kind {
                            TensorKind::Weight => g.tensor(tb).kind == TensorKind::Weight,
                            _ if inside(ta, p0) => {
                                inside(tb, sj)
                                    && self.prod[tb.index()].map(|p| p - sj)
                                        == self.prod[ta.index()].map(|p| p - p0)
                            }
                            _ if tb == prev => {
                                if streams[0].0 == u32::MAX {
                                    streams[0] = ta;
                                }
                                streams[0] == ta
                            }
                            _ => {
                                let before = |t: TensorId| {
                                    !inside(t, sj) && self.prod[t.index()].is_none_or(|p| p < p0)
                                };
                                let seen = *phase_globals[j % q]
                                    .entry(ta)
                                    .or_insert(if j % q == 0 { ta } else { tb });
                                if seen == tb && before(ta) && before(tb) {
                                    globals.insert(ta);
                                    globals.insert(tb);
                                    true
                                } else {
                                    false
                                }
                            }
                        };
                    if !ok || *map.entry(ta).or_insert(tb) != tb {
                        return None;
                    }
                }
            }
            maps.push(map);
        }
        let x0 = streams[0];
        if x0.0 == u32::MAX || globals.contains(&x0) || self.outputs.contains(&x0) {
            return None;
        }
        if self.users[x0.index()].iter().any(|&u| u >= p0 + m) {
            return None;
        }
        for (j, s) in streams.iter_mut().enumerate().skip(1) {
            *s = stream_out(j - 1);
        }
        let sunk = self.sunk(p0, end);
        // Prologue tensors read after the blocks are handed on replicated, like globals.
        for pos in (0..p0).filter(|p| !sunk.contains(p)) {
            for &o in &g.nodes[pos].outputs {
                if o != x0 && self.users[o.index()].iter().any(|&u| u >= end) {
                    globals.insert(o);
                }
            }
        }
        globals.retain(|t| g.tensor(*t).kind == TensorKind::Activation);
        let mut node_layer = vec![None; n];
        for (pos, slot) in node_layer.iter_mut().enumerate().take(end).skip(p0) {
            *slot = Some(((pos - p0) / m) as u32);
        }
        Some(Layers {
            info: LayerInfo {
                count: k,
                nodes_per_layer: m,
                blocks_differ: false,
                node_layer,
                stacks: Vec::new(),
            },
            prologue: (0..p0)
                .filter(|p| !sunk.contains(p))
                .map(|i| NodeId(i as u32))
                .collect(),
            starts: (0..k).map(|j| p0 + j * m).collect(),
            stop: end,
            own_nodes: Vec::new(),
            epilogue: sunk
                .iter()
                .copied()
                .chain(end..n)
                .map(|i| NodeId(i as u32))
                .collect(),
            streams,
            globals,
            phases: q,
            tensor_maps: maps,
            inner: None,
        })
    }
}

/// Most phases of layers tried ([`Layers::phases`]).
const MAX_PHASES: usize = 8;

/// Nodes covered by the blocks of `b`.
fn covered(b: &Option<Layers>) -> usize {
    b.as_ref()
        .map_or(0, |b| b.info.count * b.info.nodes_per_layer)
}

/// Validates every phase offset of period `m` over the run `a .. a + r + m` in `q` phases,
/// keeping in `best` the layers that cover the most nodes (at least two blocks per phase).
fn try_period(cx: &Cx, a: usize, r: usize, m: usize, q: usize, best: &mut Option<Layers>) {
    for phase in 0..m {
        let p0 = a + phase;
        let mut k = (a + r + m - p0) / m;
        let mut tries = 0;
        while k >= 2 * q && tries < 3 {
            tries += 1;
            if let Some(l) = cx.validate(p0, m, k, q) {
                if k * m > covered(best) {
                    *best = Some(l);
                }
                break;
            }
            // Only the last block may fail (its stream output read elsewhere): drop it.
            k -= 1;
            if k * m <= covered(best) {
                break;
            }
        }
    }
}

/// Nodes a block needs at least to make a stack beside another: smaller repeats (a pair of
/// Convs in a feature extractor, two Reshapes) are cheap to solve in their piece, and as
/// a stack of their own they would only tie that piece's budget to each block's share.
pub const MIN_NESTED_BLOCK: usize = 12;

/// The least part of a prologue's weight bytes an inner stack's blocks must read for the
/// stack to be nested in it.
///
/// Each piece of a layered solve holds its own share of the parameter budget. A prologue
/// solved as one piece may pool its share, replicating the weights of some ops (Convs at a
/// high resolution) and splitting others more; nested, the pieces between the stacks
/// cannot. Where an encoder's layers hold most of a decoder's prologue's weights (BART and
/// Whisper 83–84 %, T5 70 %, whose first layers differ) nesting cost 0.03–0.9 % of
/// modelled time and saved up to 10 s of compile; MobileViT's transformer stages between
/// convolutions (38–50 %) lost 4–33 %, so such a stack is left to the prologue's solve.
pub const MIN_NESTED_WEIGHTS: f64 = 0.6;

/// The stack of repeated layers covering the most nodes among nodes `lo .. hi` (blocks lie
/// there; the prologue is every node before the first block), with blocks of at least
/// `min_block` nodes.
fn detect_in(cx: &Cx, lo: usize, hi: usize, min_block: usize) -> Option<Layers> {
    if hi < lo + 2 {
        return None;
    }
    let mut best: Option<Layers> = None;
    let found = candidates(&cx.sig[lo..hi]);
    for (m, a, r) in found.into_iter().filter(|c| c.0 >= min_block).take(8) {
        if covered(&best) >= (r / m + 1) * m {
            break;
        }
        // One phase first; more only where they cover more (a tie keeps fewer phases).
        for q in 1..=MAX_PHASES {
            try_period(cx, lo + a, r, m, q, &mut best);
        }
    }
    best
}

/// The last stack among nodes `0 .. hi`, with the earlier ones nested in its prologue
/// (blocks of at least `min_block` nodes; a stack beside another, [`MIN_NESTED_BLOCK`]).
/// Where the earlier stacks do not nest ([`MIN_NESTED_WEIGHTS`]), the stack covering the
/// most nodes is the one solved as layers.
fn detect_nested(cx: &Cx, hi: usize, min_block: usize) -> Option<Layers> {
    let first = detect_in(cx, 0, hi, min_block)?;
    let mut last = None;
    // A later stack (a decoder after an encoder) is the outer one.
    while let Some(later) = detect_in(
        cx,
        last.as_ref().unwrap_or(&first).end(),
        hi,
        MIN_NESTED_BLOCK,
    ) {
        last = Some(later);
    }
    if let Some(mut outer) = last {
        if with_inner(cx, &mut outer) {
            return Some(outer);
        }
    }
    let mut first = first;
    with_inner(cx, &mut first);
    Some(first)
}

/// Nests in `outer`'s prologue the stacks found there, when they read enough of its
/// weights ([`MIN_NESTED_WEIGHTS`]); whether they were.
fn with_inner(cx: &Cx, outer: &mut Layers) -> bool {
    // The stream entering the blocks must be an activation computed in the prologue for an
    // inner stack to lead to it.
    if cx.g.tensor(outer.streams[0]).kind != TensorKind::Activation {
        return false;
    }
    let Some(inner) = detect_nested(cx, outer.starts[0], MIN_NESTED_BLOCK) else {
        return false;
    };
    let bytes = |nodes: &[NodeId]| -> usize {
        super::budget::weights_read(cx.g, nodes)
            .iter()
            .map(|t| cx.g.weights[t].size_bytes())
            .sum()
    };
    let blocks: Vec<NodeId> = inner.block_nodes().collect();
    let nested = bytes(&blocks) as f64 >= MIN_NESTED_WEIGHTS * bytes(&outer.prologue) as f64;
    if nested {
        outer.nest(inner);
    }
    nested
}

/// Finds repeated layers, or where none repeat, a chain of blocks that differ
/// ([`super::cuts`]); None when there are fewer than two blocks.
pub fn detect(g: &Graph) -> Option<Layers> {
    let n = g.nodes.len();
    if n < 2 {
        return None;
    }
    let mut prod = vec![None; g.tensors.len()];
    let mut users = vec![Vec::new(); g.tensors.len()];
    for (pos, nd) in g.nodes.iter().enumerate() {
        for &o in &nd.outputs {
            prod[o.index()] = Some(pos);
        }
        for &i in &nd.inputs {
            users[i.index()].push(pos);
        }
    }
    let cx = Cx {
        g,
        sig: signatures(g),
        prod,
        users,
        outputs: g.outputs.iter().copied().collect(),
    };
    let stack = detect_nested(&cx, n, 1);
    if n < super::cuts::CHAIN_MIN_NODES {
        return stack;
    }
    let (in_stacks, m) = stack.as_ref().map_or((0, 0), |s| {
        let levels = s.levels();
        let covered = levels.iter().map(|l| l.info.count * l.info.nodes_per_layer);
        let m = levels
            .iter()
            .map(|l| l.info.nodes_per_layer)
            .max()
            .unwrap_or(0);
        (covered.sum(), m)
    });
    // Layers in an irregular order (sliding and full attention as S F S S F F S F) repeat
    // only in part: the stack found covers a few of them and the rest is solved whole as a
    // prologue or an epilogue. A chain of blocks that differ covering a block's worth of
    // nodes more is solved instead.
    if in_stacks + m.max(1) > n {
        // No chain can cover a block's worth more than the stack.
        return stack;
    }
    if let Some(chain) = super::cuts::chain(&cx) {
        if chain.block_nodes_count() >= in_stacks + m.max(1) {
            return Some(chain);
        }
    }
    stack
}
