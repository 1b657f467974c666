//! Layers that differ: a chain of blocks, cut where one tensor crosses.
//!
//! [`super::layers`] finds layers that repeat. Some models alternate layers of two kinds
//! (Cohere-2, OLMo-3 and VaultGemma: sliding-window and full attention; LFM2: short
//! convolutions and attention), and an export with fewer layers than the period has no
//! repeat at all; nor has a model whose layers all differ. Its whole graph went to one
//! frontier DP, which kept the masks, rotary tables and position ids of every layer open
//! across the first and hit its state budget (Cohere-2, 2 layers, 8×128, N = 2: a 41 %
//! gap).
//!
//! The chain cuts the node order where one activation crosses, apart from tensors computed
//! before the first block (the *globals*: masks, rotary tables, position ids, produced
//! replicated by the prologue as for repeated layers). That tensor is the residual stream.
//! At cut `c` (between positions `c − 1` and `c`), let `k1(c)` be the position of the
//! latest producer among the tensors that cross `c` and `k2(c)` the second latest. With
//! the prologue ending at `c0`, cut `c` hands on exactly one tensor iff
//! `k2(c) < c0 ≤ k1(c)`. For each `c0`, the cuts whose tensor has one shape and dtype (the
//! stream's: one set of layouts serves every block) make a chain; the chain that covers
//! the most nodes wins, if it covers at least [`MIN_CHAIN_COVER`] of the graph (a CNN's
//! stages change the stream's shape, and their pieces would lose the budget a whole
//! solve pools). Blocks shorter than [`MIN_CHAIN_BLOCK`] nodes join the block before.
//!
//! Each block is then its own representative (`phases` = the block count) and the chain DP
//! runs as for repeated layers: exact given the per-block budget shares and replicated
//! globals.
use super::layers::{Cx, Layers};
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::plan::LayerInfo;
use tessera_ir::{DType, NodeId, TensorId, TensorKind};

/// Fewest nodes in a block of a chain: shorter runs between cuts (a half-layer's MLP)
/// merge with the next, so a block is about a layer's part and pieces stay few.
pub const MIN_CHAIN_BLOCK: usize = 12;

/// Fewest nodes in a graph cut into a chain. Smaller graphs are solved whole where nothing
/// repeats: a 2-layer Cohere-2 or OLMo-3 export (110-122 nodes) solves whole in 0.5-1.6 s,
/// and its whole-graph plan ran 8-13 % faster at 8×128 on 2 CPU devices than the chain's
/// (whose blocks cannot pool their budget shares or compute shared masks split).
pub const CHAIN_MIN_NODES: usize = 200;

/// Least part of the graph's nodes a chain must cover.
pub const MIN_CHAIN_COVER: f64 = 0.5;

/// Chains of two blocks or more (after merging) checked, most covered first, before
/// giving up.
const MAX_TRIES: usize = 16;

/// What crosses one cut, apart from what the prologue computes.
#[derive(Clone, Copy)]
struct Cut {
    /// Position of the latest producer among the crossing tensors.
    k1: usize,
    /// The second latest (None: one tensor crosses).
    k2: Option<usize>,
    /// The tensor `k1` produces.
    t: TensorId,
    /// Its shape and dtype, interned.
    key: usize,
}

/// The cut at each position `c` in `0 ..= n` (None where nothing crosses).
fn cuts(cx: &Cx) -> Vec<Option<Cut>> {
    let g = cx.g;
    let n = g.nodes.len();
    // Last position that reads each produced tensor (n for a graph output).
    let last_use = |t: TensorId| -> Option<usize> {
        let u = cx.users[t.index()].iter().copied().max();
        if cx.outputs.contains(&t) {
            Some(n)
        } else {
            u
        }
    };
    let mut keys: BTreeMap<(Vec<usize>, DType), usize> = BTreeMap::new();
    let mut expire: Vec<Vec<(usize, TensorId)>> = vec![Vec::new(); n + 1];
    let mut active: BTreeSet<(usize, TensorId)> = BTreeSet::new();
    let mut out = vec![None];
    for c in 1..=n {
        let p = c - 1;
        for &o in &g.nodes[p].outputs {
            if let Some(l) = last_use(o).filter(|&l| l >= c) {
                active.insert((p, o));
                expire[l].push((p, o));
            }
        }
        for e in std::mem::take(&mut expire[p]) {
            active.remove(&e);
        }
        let mut top = active.iter().rev();
        let Some(&(k1, t)) = top.next() else {
            out.push(None);
            continue;
        };
        let info = g.tensor(t);
        let next = keys.len();
        let key = *keys.entry((info.shape.clone(), info.dtype)).or_insert(next);
        out.push(Some(Cut {
            k1,
            k2: top.next().map(|e| e.0),
            t,
            key,
        }));
    }
    out
}

/// Cuts after `c0` that hand on one tensor (`k2(c) < c0 ≤ k1(c)`).
fn valid_after(cuts: &[Option<Cut>], c0: usize) -> impl Iterator<Item = (usize, Cut)> + '_ {
    cuts.iter()
        .enumerate()
        .skip(c0 + 1)
        .filter_map(move |(c, cut)| {
            cut.filter(|cut| cut.k1 >= c0 && cut.k2.is_none_or(|k| k < c0))
                .map(|cut| (c, cut))
        })
}

/// Every `(c0, key)` chain of at least two cuts that covers enough nodes, most covered
/// first: `(cover, c0, key)`.
fn candidates(cuts: &[Option<Cut>], n: usize) -> Vec<(usize, usize, usize)> {
    let min_cover = ((MIN_CHAIN_COVER * n as f64).ceil() as usize).max(2 * MIN_CHAIN_BLOCK);
    let mut out = Vec::new();
    for c0 in 0..n {
        // key → (cuts, the last one).
        let mut by_key: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for (c, cut) in valid_after(cuts, c0) {
            let e = by_key.entry(cut.key).or_default();
            *e = (e.0 + 1, c);
        }
        for (key, (count, last)) in by_key {
            if count >= 2 && last - c0 >= min_cover {
                out.push((last - c0, c0, key));
            }
        }
    }
    out.sort_by_key(|&(cover, c0, _)| (std::cmp::Reverse(cover), c0));
    out
}

/// The cuts kept after `c0`: a block shorter than [`MIN_CHAIN_BLOCK`] nodes joins the one
/// before it (a layer's MLP half joins its attention half), the first block the next.
pub(super) fn merged(c0: usize, cuts: &[usize]) -> Vec<usize> {
    let mut kept = vec![c0];
    for &c in cuts {
        let last = kept.len() - 1;
        if c - kept[last] >= MIN_CHAIN_BLOCK {
            kept.push(c);
        } else if last > 0 {
            kept[last] = c;
        }
    }
    kept
}

/// The chain of blocks that differ (None: no chain of two blocks covers enough nodes).
pub(super) fn chain(cx: &Cx) -> Option<Layers> {
    let n = cx.g.nodes.len();
    let cuts = cuts(cx);
    let mut tries = 0;
    for (_, c0, key) in candidates(&cuts, n) {
        let mut at: Vec<usize> = valid_after(&cuts, c0)
            .filter(|(_, cut)| cut.key == key)
            .map(|(c, _)| c)
            .collect();
        let Some(x0) = at
            .first()
            .and_then(|&c| cuts[c])
            .and_then(|cut| entering(cx, c0, cut.t))
        else {
            continue;
        };
        // A cut x0 crosses hands on x0 too.
        let last_read = cx.users[x0.index()].iter().copied().max().unwrap_or(c0);
        at.retain(|&c| c > last_read);
        if at.is_empty() {
            continue;
        }
        let kept = merged(c0, &at);
        if kept.len() < 3 {
            continue;
        }
        if let Some(l) = build(cx, &cuts, &kept, x0) {
            return Some(l);
        }
        tries += 1;
        if tries == MAX_TRIES {
            break;
        }
    }
    None
}

/// The stream entering the first block of a chain whose prologue ends at `c0`: the one
/// tensor with the shape and dtype of the stream `s` that crosses `c0` (computed in the
/// prologue, or a graph input), not a graph output. A second one would be handed on to a
/// later block as a global, produced replicated: a residual stream that skips a block.
fn entering(cx: &Cx, c0: usize, s: TensorId) -> Option<TensorId> {
    let g = cx.g;
    let s = g.tensor(s);
    let mut found = (0..g.tensors.len() as u32).map(TensorId).filter(|&t| {
        let info = g.tensor(t);
        let made = match info.kind {
            TensorKind::Input => true,
            TensorKind::Activation => cx.prod[t.index()].is_some_and(|p| p < c0),
            TensorKind::Weight => false,
        };
        made && info.shape == s.shape
            && info.dtype == s.dtype
            && (cx.outputs.contains(&t) || cx.users[t.index()].iter().any(|&u| u >= c0))
    });
    let x0 = found.next()?;
    (found.next().is_none() && !cx.outputs.contains(&x0)).then_some(x0)
}

/// The layers of the chain cut at `kept` (`kept[0]` ends the prologue) with `x0` entering
/// the first block.
fn build(cx: &Cx, cuts: &[Option<Cut>], kept: &[usize], x0: TensorId) -> Option<Layers> {
    let g = cx.g;
    let n = g.nodes.len();
    let k = kept.len() - 1;
    let (c0, stop) = (kept[0], kept[k]);
    let stream = |c: usize| cuts[c].map(|cut| cut.t);
    let sunk = cx.sunk(c0, stop);
    // Prologue nodes whose outputs only one block reads (directly, or through other such
    // nodes: the sliding-window mask of a sliding layer) are that block's own: its piece
    // computes them in the layout it wants. Handed on as globals they would be computed
    // replicated and sliced by the block (Cohere-2 and OLMo-3 at 8×128 on 2 devices ran
    // 9-13 % slower so). What two blocks read stays in the prologue.
    let block_of = |pos: usize| {
        (c0..stop)
            .contains(&pos)
            .then(|| kept.partition_point(|&c| c <= pos) - 1)
    };
    let x0_made = cx.prod[x0.index()];
    let mut owner: Vec<Option<usize>> = vec![None; c0];
    for pos in (0..c0).rev() {
        if sunk.contains(&pos) || x0_made == Some(pos) {
            continue;
        }
        let mut own = None;
        let mut alone = true;
        for &o in &g.nodes[pos].outputs {
            alone &= !cx.outputs.contains(&o);
            for &u in &cx.users[o.index()] {
                let b = if u < c0 { owner[u] } else { block_of(u) };
                match (b, own) {
                    (None, _) => alone = false,
                    (Some(j), Some(k)) if j != k => alone = false,
                    (Some(j), _) => own = Some(j),
                }
            }
        }
        if alone {
            owner[pos] = own;
        }
    }
    let mut own_nodes = vec![Vec::new(); k];
    for (pos, o) in owner.iter().enumerate() {
        if let Some(j) = o {
            own_nodes[*j].push(NodeId(pos as u32));
        }
    }
    let in_prologue = |p: usize| p < c0 && !sunk.contains(&p) && owner[p].is_none();
    // The globals: what the prologue computes and the blocks, their own nodes or the
    // epilogue read.
    let mut globals = BTreeSet::new();
    for pos in (0..c0).filter(|&p| in_prologue(p)) {
        for &o in &g.nodes[pos].outputs {
            if o != x0 && cx.users[o.index()].iter().any(|&u| !in_prologue(u)) {
                globals.insert(o);
            }
        }
    }
    globals.retain(|t| g.tensor(*t).kind == TensorKind::Activation);
    let mut node_layer = vec![None; n];
    for j in 0..k {
        for slot in &mut node_layer[kept[j]..kept[j + 1]] {
            *slot = Some(j as u32);
        }
    }
    for (pos, o) in owner.iter().enumerate() {
        node_layer[pos] = o.map(|j| j as u32).or(node_layer[pos]);
    }
    let mut streams = vec![x0];
    for &c in &kept[1..] {
        streams.push(stream(c)?);
    }
    let largest = kept.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Some(Layers {
        info: LayerInfo {
            count: k,
            nodes_per_layer: largest,
            blocks_differ: true,
            node_layer,
            stacks: Vec::new(),
        },
        prologue: (0..c0)
            .filter(|&p| in_prologue(p))
            .map(|i| NodeId(i as u32))
            .collect(),
        starts: kept[..k].to_vec(),
        stop,
        own_nodes,
        epilogue: sunk
            .iter()
            .copied()
            .chain(stop..n)
            .map(|i| NodeId(i as u32))
            .collect(),
        streams,
        globals,
        phases: k,
        tensor_maps: Vec::new(),
        inner: None,
    })
}

#[cfg(test)]
mod tests {
    use super::merged;

    #[test]
    fn short_blocks_join_the_block_before() {
        // Attention halves of 30 nodes, MLP halves of 7: blocks of whole layers.
        assert_eq!(merged(5, &[35, 42, 72, 79]), vec![5, 42, 79]);
        // A short first block joins the next.
        assert_eq!(merged(0, &[3, 40, 80]), vec![0, 40, 80]);
        // Nothing long enough: no block at all.
        assert_eq!(merged(0, &[5, 9]), vec![0]);
    }
}
