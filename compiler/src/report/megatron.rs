//! The communication of a Megatron-style hand plan for the same model, as the yardstick
//! `tessera inspect` compares a plan with.
//!
//! Megatron-LM splits every attention block and every MLP into a column-parallel then a
//! row-parallel projection, so each residual branch ends in one all-reduce of the stream:
//! 2 per transformer layer (counted as the residual additions of layer 1, whose chain starts
//! at the stream tensor layer 0 hands on; per stack where there are several, as an
//! encoder's and a decoder's, whose layers differ: a decoder layer's cross-attention is a
//! third branch). A vocabulary-parallel embedding adds one all-reduce of its output, and a
//! column-parallel LM head one all-gather of the logits. The reference is derived from the
//! plan's own graph: the layers found by the search, the stream tensor handed from layer 0 to
//! layer 1, the vocabulary table (the gathered weight with the most rows) and a graph output
//! whose last axis is the vocabulary. Ring bytes per rank: `2(N−1)/N` of an all-reduce's
//! tensor, `(N−1)/N` of an all-gather's.
use serde::Serialize;
use std::collections::BTreeSet;
use tessera_ir::plan::{CollectiveKind, Plan};
use tessera_ir::{Op, TensorKind};

/// The Megatron-style reference of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MegatronReference {
    /// All-reduces: one per residual branch of each layer, plus 1 for a vocabulary-parallel
    /// embedding.
    pub all_reduces: u64,
    /// All-gathers: 1 for the logits of a vocabulary-sized output, else 0.
    pub all_gathers: u64,
    /// Sum of the logical sizes of the tensors these collectives move.
    pub logical_bytes: u64,
    /// Bytes each rank sends on a ring.
    pub ring_bytes_per_rank: u64,
    /// Bytes each rank of the plan sends (the largest over ranks), for comparison.
    pub plan_ring_bytes_per_rank: u64,
}

fn bytes_of(plan: &Plan, t: tessera_ir::TensorId) -> u64 {
    let info = plan.graph.tensor(t);
    (tessera_ir::numel(&info.shape) * info.dtype.size_bytes()) as u64
}

/// The reference of `plan`, when the search found at least 2 repeated layers (None
/// otherwise: without them there is no stream to count on).
pub fn megatron_reference(plan: &Plan) -> Option<MegatronReference> {
    let layers = plan.layers.as_ref()?;
    let g = &plan.graph;
    // Tensor parallelism runs inside one data group.
    let n = plan.mesh.group_size() as u64;
    let in_layer = |node: usize, l: u32| layers.node_layer.get(node).copied().flatten() == Some(l);
    let producers = g.producers();
    // Per stack (an encoder's, a decoder's): the stream, produced in its first layer and
    // read in its second (the largest such tensor), and the residual branches of the second
    // layer: additions onto the chain that starts at the stream. (all-reduces, bytes each)
    // The tensor handed to layer `l` (from layer `from`, or from outside the layers): the
    // largest, or the largest of `shape`.
    let handed = |l: u32, from: Option<u32>, shape: Option<&Vec<usize>>| {
        let mut handed: BTreeSet<tessera_ir::TensorId> = BTreeSet::new();
        for (i, node) in g.nodes.iter().enumerate() {
            if !in_layer(i, l) {
                continue;
            }
            for t in &node.inputs {
                let made = producers[t.index()].map(|p| layers.node_layer.get(p.index()));
                let ok = match (made, from) {
                    (Some(Some(Some(p))), Some(f)) => *p == f,
                    (Some(Some(None)), None) => true,
                    _ => false,
                };
                if ok && shape.is_none_or(|s| &g.tensor(*t).shape == s) {
                    handed.insert(*t);
                }
            }
        }
        handed.into_iter().max_by_key(|t| bytes_of(plan, *t))
    };
    // Residual branches of layer `l`: additions onto the chain that starts at `stream`.
    let branches = |l: u32, stream: tessera_ir::TensorId| {
        let mut chain: BTreeSet<tessera_ir::TensorId> = BTreeSet::from([stream]);
        let mut branches = 0u64;
        for (i, node) in g.nodes.iter().enumerate() {
            let is_add =
                matches!(&node.op, Op::Binary(b) if b.kind == tessera_ir::op::BinaryOp::Add);
            if in_layer(i, l)
                && is_add
                && node.inputs.iter().any(|t| chain.contains(t))
                && g.tensor(node.outputs[0]).shape == g.tensor(stream).shape
            {
                chain.insert(node.outputs[0]);
                branches += 1;
            }
        }
        branches
    };
    let mut stacks: Vec<(u64, u64)> = Vec::new();
    for st in layers.stack_list() {
        let (l0, l1) = (st.first, st.first.saturating_add(1));
        let Some(stream) = handed(l1, Some(l0), None) else {
            continue;
        };
        let count = if layers.blocks_differ {
            // Blocks that differ: each block's own branches (the first block's stream
            // comes from the prologue, with the others' shape).
            let shape = &g.tensor(stream).shape;
            let own = (0..st.count.min(layers.node_layer.len()) as u32)
                .filter_map(|l| {
                    let from = l.checked_sub(1).map(|p| p + st.first);
                    let l = l + st.first;
                    handed(l, from, Some(shape)).map(|s| branches(l, s))
                })
                .sum::<u64>();
            if own == 0 {
                2u64.saturating_mul(st.count as u64)
            } else {
                own
            }
        } else {
            let per_layer = match branches(l1, stream) {
                0 => 2,
                b => b,
            };
            per_layer.saturating_mul(st.count as u64)
        };
        stacks.push((count, bytes_of(plan, stream)));
    }
    if stacks.is_empty() {
        return None;
    }
    // The vocabulary table and its gather, outside the layers.
    let table_rows = |t: &tessera_ir::TensorId| {
        let info = g.tensor(*t);
        (info.kind == TensorKind::Weight && info.shape.len() >= 2).then(|| info.shape[0])
    };
    let vocab = g
        .nodes
        .iter()
        .filter(|nd| matches!(nd.op, Op::Gather(_)))
        .filter_map(|nd| nd.inputs.first().and_then(table_rows))
        .max();
    let embedding: u64 = g
        .nodes
        .iter()
        .filter(|nd| matches!(nd.op, Op::Gather(_)))
        .filter(|nd| vocab.is_some() && nd.inputs.first().and_then(table_rows) == vocab)
        .map(|nd| bytes_of(plan, nd.outputs[0]))
        .max()
        .unwrap_or(0);
    let logits: u64 = g
        .outputs
        .iter()
        .filter(|t| vocab.is_some() && g.tensor(**t).shape.last().copied() == vocab)
        .map(|t| bytes_of(plan, *t))
        .max()
        .unwrap_or(0);
    let all_reduce_bytes = stacks.iter().fold(embedding, |a, (c, b)| {
        a.saturating_add(c.saturating_mul(*b))
    });
    // Per collective, summed and rounded as the plan's own estimate is (a zero-device mesh
    // of an untrusted plan counts as one device).
    let n = n.max(1) as usize;
    let ring = stacks
        .iter()
        .map(|&(c, b)| c as f64 * crate::cost::ring_bytes(CollectiveKind::AllReduce, b, n))
        .sum::<f64>()
        + crate::cost::ring_bytes(CollectiveKind::AllReduce, embedding, n)
        + crate::cost::ring_bytes(CollectiveKind::AllGather, logits, n);
    Some(MegatronReference {
        all_reduces: stacks
            .iter()
            .fold(u64::from(embedding > 0), |a, (c, _)| a.saturating_add(*c)),
        all_gathers: u64::from(logits > 0),
        logical_bytes: all_reduce_bytes + logits,
        ring_bytes_per_rank: ring.round() as u64,
        plan_ring_bytes_per_rank: plan
            .estimates
            .iter()
            .map(|e| e.comm_bytes)
            .max()
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlp_stack_needs_one_all_reduce_per_block() {
        use crate::report::fixtures::mlp_stack_plan;
        assert_eq!(megatron_reference(&mlp_stack_plan(1, 2)), None);
        let plan = mlp_stack_plan(3, 4);
        let r = megatron_reference(&plan).expect("3 layers");
        let stream = r.logical_bytes / 3;
        assert_eq!(r.all_reduces, 3);
        assert_eq!(r.all_gathers, 0);
        // 3 all-reduces of the stream, 2 (N-1)/N of each sent per rank.
        assert_eq!(r.ring_bytes_per_rank, 3 * 2 * 3 * stream / 4);
        assert_eq!(
            r.logical_bytes,
            plan.collectives.iter().map(|c| c.bytes).sum::<u64>()
        );
    }

    #[test]
    fn stacks_are_counted_each_and_bad_ones_skipped() {
        use crate::report::fixtures::mlp_stack_plan;
        use tessera_ir::plan::LayerStack;
        let whole = megatron_reference(&mlp_stack_plan(4, 4)).expect("4 layers");
        // The same 4 layers recorded as two stacks of 2: the same reference, summed per stack.
        let mut plan = mlp_stack_plan(4, 4);
        let stack = |first, count| LayerStack {
            first,
            count,
            nodes_per_layer: 1,
        };
        let info = plan.layers.as_mut().expect("layers");
        info.stacks = vec![stack(0, 2), stack(2, 2)];
        assert_eq!(megatron_reference(&plan), Some(whole.clone()));
        // A stack naming layers the plan does not have (an untrusted plan) counts nothing;
        // one of absurd size saturates rather than overflowing.
        let info = plan.layers.as_mut().expect("layers");
        info.stacks = vec![stack(0, 2), stack(u32::MAX, usize::MAX)];
        let r = megatron_reference(&plan).expect("the first stack");
        assert_eq!(r.all_reduces, whole.all_reduces / 2);
        let info = plan.layers.as_mut().expect("layers");
        info.stacks = vec![stack(0, usize::MAX)];
        assert_eq!(
            megatron_reference(&plan).map(|r| r.all_reduces),
            Some(u64::MAX)
        );
    }
}
