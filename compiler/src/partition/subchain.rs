//! A large representative block solved as a chain of its parts.
//!
//! A stack's period may hold several layers that differ: Cohere-2 alternates a sliding
//! layer with rotary embeddings and a full-attention layer without, so its blocks are two
//! layers (94 nodes at 8×128), and LFM2's are a convolution layer and an attention layer.
//! One frontier-DP run over such a block keeps the layers' masks and tables open across
//! both, hits its state budget and leaves a weak bound (a 29 % gap on a 32-layer Cohere-2
//! export). Where a block of at least [`SUBCHAIN_MIN_NODES`] nodes has cuts inside it
//! where one tensor of the stream's shape crosses (apart from the stack's globals, which
//! every piece reads replicated), it is solved as a chain of its parts, as
//! [`super::cuts`] cuts a graph: each part a matrix over the stream's layouts, the block's
//! matrix their min-plus product (cost and bound apart). Like every piece of a layered
//! solve, a part holds its own share of the budget.
use super::chain::merge;
use super::cuts::merged;
use super::segment::{Selection, VariantSolution};
use super::stacks::Matrix;
use std::collections::BTreeMap;
use tessera_ir::{Graph, NodeId, TensorId};

/// Fewest nodes in a block solved as a chain of its parts. A block of one layer (27 to 72
/// nodes in the exports seen) has at most one cut inside, before a short MLP part that
/// joins the attention part, and stays whole; periods of two layers (LFM2's 72 nodes,
/// Cohere-2's 94) split.
pub const SUBCHAIN_MIN_NODES: usize = 64;

/// The cuts inside the block of consecutive `nodes` entering with `x_in` and leaving with
/// `x_out`: `(position of the first node after the cut, the tensor crossing it)`, parts
/// shorter than [`super::cuts::MIN_CHAIN_BLOCK`] joined with the part before. Empty when the block is
/// small or has no such cut.
pub fn cuts(
    g: &Graph,
    nodes: &[NodeId],
    x_in: TensorId,
    x_out: TensorId,
) -> Vec<(usize, TensorId)> {
    if nodes.len() < SUBCHAIN_MIN_NODES {
        return Vec::new();
    }
    let s = nodes[0].index();
    let pos = |i: usize| s + i;
    let stream = g.tensor(x_in);
    // Last position (within the block) that reads each tensor made in it or entering it.
    let mut last: BTreeMap<TensorId, usize> = BTreeMap::from([(x_in, s)]);
    for (i, n) in nodes.iter().enumerate() {
        let nd = &g.nodes[n.index()];
        for &t in &nd.inputs {
            if let Some(l) = last.get_mut(&t) {
                *l = pos(i);
            }
        }
        for &o in &nd.outputs {
            last.insert(o, pos(i));
        }
    }
    // The stream output is read after the block.
    last.insert(x_out, usize::MAX);
    let made_at: BTreeMap<TensorId, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| g.nodes[n.index()].outputs.iter().map(move |&o| (o, pos(i))))
        .collect();
    let mut found = Vec::new();
    for c in pos(1)..pos(nodes.len()) {
        let mut crossing = last
            .iter()
            .filter(|(t, &l)| l >= c && made_at.get(t).is_none_or(|&p| p < c));
        let (Some((&t, _)), None) = (crossing.next(), crossing.next()) else {
            continue;
        };
        let info = g.tensor(t);
        if t != x_in && info.shape == stream.shape && info.dtype == stream.dtype {
            found.push((c, t));
        }
    }
    // Short parts join the part before (the first the next), as a chain's blocks do.
    let end = pos(nodes.len());
    let at: Vec<usize> = found.iter().map(|f| f.0).chain([end]).collect();
    // The block has at least SUBCHAIN_MIN_NODES > MIN_CHAIN_BLOCK nodes: `kept` is `s`,
    // the inner cuts kept, then `end`.
    let kept = merged(s, &at);
    let tensor: BTreeMap<usize, TensorId> = found.into_iter().collect();
    kept[1..kept.len() - 1]
        .iter()
        .filter_map(|c| tensor.get(c).map(|t| (*c, *t)))
        .collect()
}

/// The min-plus product of two matrices over the same layouts: cost and bound minimised
/// apart (a bound of each entry), the cheapest path's programs merged.
pub fn compose(a: &Matrix, b: &Matrix) -> Matrix {
    let n = a.len();
    let mut out: Matrix = vec![vec![None; n]; n];
    for (i, row) in a.iter().enumerate() {
        for k in 0..n {
            let mut best: Option<(f64, usize)> = None;
            let mut lower = f64::INFINITY;
            for (j, aij) in row.iter().enumerate() {
                let (Some(x), Some(y)) = (aij, &b[j][k]) else {
                    continue;
                };
                lower = lower.min(x.lower + y.lower);
                let c = x.cost + y.cost;
                if c.is_finite() && best.is_none_or(|(bc, _)| c < bc) {
                    best = Some((c, j));
                }
            }
            if let Some((cost, j)) = best {
                let (x, y) = (row[j].as_ref(), b[j][k].as_ref());
                let mut sel: Selection = x.map(|v| v.sel.clone()).unwrap_or_default();
                if let Some(y) = y {
                    merge(&mut sel, &y.sel);
                }
                out[i][k] = Some(VariantSolution { cost, lower, sel });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cost: f64, lower: f64) -> Option<VariantSolution> {
        Some(VariantSolution {
            cost,
            lower,
            sel: Selection::default(),
        })
    }

    #[test]
    fn parts_compose_by_min_plus_with_their_bounds() {
        // Two layouts: part a from R to {R, S}, part b from {R, S} to R.
        let a: Matrix = vec![vec![entry(1.0, 1.0), entry(2.0, 1.5)], vec![None, None]];
        let b: Matrix = vec![vec![entry(5.0, 4.0), None], vec![entry(3.0, 2.0), None]];
        let m = compose(&a, &b);
        let rr = m[0][0].as_ref().expect("a path");
        // R→S→R costs 2 + 3 = 5 < R→R→R 1 + 5 = 6; the bound is the least sum of bounds
        // over every path (1.5 + 2 = 3.5 < 1 + 4 = 5).
        assert_eq!((rr.cost, rr.lower), (5.0, 3.5));
        assert!(m[0][1].is_none() && m[1][0].is_none());
    }
}
