//! ONNX Attention split by heads or by batch ([`batch`]). Every head is independent, so
//! Q, K, V split on their head axis (4-D `[B, heads, S, D]`: axis 1; 3-D `[B, S, heads·D]`:
//! axis 2, whole heads per rank when N divides both head counts, the lowering dividing the
//! head-count attributes by N) and the past cache on axis 1 give each rank whole heads; Y
//! splits like Q, the qk matrix on axis 1; a mask follows on its head axis (R where it
//! broadcasts). Grouped-query heads stay
//! consistent: local query head h reads local K/V head h / (Hq / Hkv), as globally.
//!
//! With fewer key/value heads than ranks ([`kv_replicated`]), Megatron's KV-head replication:
//! Q still splits N ways by heads, K and V stay replicated, and each rank slices the one
//! key/value head its query heads read (every rank's query heads must lie in one group).
use super::matmul::aligned;
use super::{t, RuleCx, Sig};
use crate::partition::form::{Lowering, Operand};
use tessera_ir::op::AttentionAttrs;
use tessera_ir::{Layout, NodeId, Op};

pub(super) fn heads(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Attention(a) = &nd.op else {
        return vec![];
    };
    let axis = match (cx.shape(nd.inputs[0]).len(), a.q_num_heads, a.kv_num_heads) {
        (4, _, _) => 1,
        // Ragged head counts are checked per rank (ragged::consistent keeps the q/kv ratio).
        (3, Some(hq), Some(hkv)) if hq >= cx.n && hkv >= cx.n => 2,
        _ => return vec![],
    };
    if a.has_nonpad {
        return vec![];
    }
    let inputs = operands(cx, node, a, Layout::Split(axis), 1);
    let out = if a.qk_output { 1 } else { axis };
    vec![(inputs, Layout::Split(out), Lowering::Op)]
}

/// The operands of attention `node` in their order: Q, K and V in `qkv`; the mask aligned
/// with axis `scores_axis` of the `[B, heads, S_q, S_kv]` scores (R where it broadcasts);
/// the past cache and the per-sequence lengths split on that axis.
fn operands(
    cx: &RuleCx,
    node: NodeId,
    a: &AttentionAttrs,
    qkv: Layout,
    scores_axis: usize,
) -> Vec<Operand> {
    let ins = &cx.g.node(node).inputs;
    let mut out = vec![t(ins[0], qkv), t(ins[1], qkv), t(ins[2], qkv)];
    let mut next = 3;
    if a.has_mask {
        out.push(t(ins[next], aligned(cx.shape(ins[next]), 4, scores_axis)));
        next += 1;
    }
    if a.has_past {
        out.push(t(ins[next], Layout::Split(scores_axis)));
        out.push(t(ins[next + 1], Layout::Split(scores_axis)));
        next += 2;
    }
    if a.has_nonpad {
        out.push(t(ins[next], Layout::Split(scores_axis)));
    }
    out
}

/// Attention split on the batch axis: batch elements are independent, as heads are. Q, K,
/// V, the past cache and the per-sequence lengths split on axis 0, the mask along its batch
/// axis (R where it broadcasts over the batch), the output (Y or the qk matrix) on axis 0.
/// Head counts stay whole, so it applies whatever the heads and N; the partitioner pairs it
/// with a batch split of the projections around it (a data-parallel layer).
pub(super) fn batch(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Attention(a) = &nd.op else {
        return vec![];
    };
    let inputs = operands(cx, node, a, Layout::Split(0), 0);
    vec![(inputs, Layout::Split(0), Lowering::Op)]
}

/// `(axis, query heads, key/value heads)` of an attention node: the head axis of Q, K and V
/// (4-D `[B, heads, S, D]`: 1; 3-D `[B, S, heads·D]`: 2).
pub(crate) fn gqa_dims(
    a: &AttentionAttrs,
    q: &[usize],
    k: &[usize],
) -> Option<(usize, usize, usize)> {
    match (q.len(), a.q_num_heads, a.kv_num_heads) {
        (4, _, _) if k.len() == 4 => Some((1, q[1], k[1])),
        (3, Some(hq), Some(hkv)) => Some((2, hq, hkv)),
        _ => None,
    }
}

/// For each rank holding `q_bounds[r]` of Q's head axis (`q_extent` elements, `hq` heads),
/// the one key/value head its query heads read (`hq / hkv` query heads share one); `None`
/// when a rank's chunk is not whole heads or spans two groups.
pub(crate) fn kv_head_of_ranks(
    q_bounds: &[(usize, usize)],
    q_extent: usize,
    hq: usize,
    hkv: usize,
) -> Option<Vec<usize>> {
    if hq == 0 || hkv == 0 || !hq.is_multiple_of(hkv) || !q_extent.is_multiple_of(hq) {
        return None;
    }
    let (d, group) = (q_extent / hq, hq / hkv);
    q_bounds
        .iter()
        .map(|&(s, e)| {
            if e <= s || !s.is_multiple_of(d) || !e.is_multiple_of(d) {
                return None;
            }
            let (h0, h1) = (s / d, e / d);
            (h0 / group == (h1 - 1) / group).then_some(h0 / group)
        })
        .collect()
}

/// Grouped-query attention on more ranks than key/value heads: Q split by heads, K and V
/// replicated, Y split like Q; the lowering slices each rank's key/value head
/// ([`Lowering::KvHeadSlice`]). Only where the plain head split cannot apply (fewer KV heads
/// than ranks) and every rank's query heads read one KV head.
pub(super) fn kv_replicated(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Attention(a) = &nd.op else {
        return vec![];
    };
    if a.has_nonpad || a.has_past || a.qk_output {
        return vec![];
    }
    let q = cx.shape(nd.inputs[0]);
    let Some((axis, hq, hkv)) = gqa_dims(a, q, cx.shape(nd.inputs[1])) else {
        return vec![];
    };
    if hkv >= cx.n || hkv == hq {
        return vec![];
    }
    let Some(bounds) = cx.grains.bounds(q[axis], cx.n) else {
        return vec![];
    };
    if kv_head_of_ranks(&bounds, q[axis], hq, hkv).is_none() {
        return vec![];
    }
    let mask = a.has_mask.then(|| {
        let m = nd.inputs[3];
        t(m, aligned(cx.shape(m), 4, 1))
    });
    // K and V replicated, each rank slicing its head; or already in key/value blocks
    // (each rank holding exactly its head: the op runs as is on the local heads).
    let mut forms = Vec::new();
    for (kv_layout, lowering) in [
        (Layout::Replicated, Lowering::KvHeadSlice),
        (Layout::Block(axis), Lowering::Op),
    ] {
        let mut inputs = vec![
            t(nd.inputs[0], Layout::Split(axis)),
            t(nd.inputs[1], kv_layout),
            t(nd.inputs[2], kv_layout),
        ];
        inputs.extend(mask.clone());
        forms.push((inputs, Layout::Split(axis), lowering));
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::kv_head_of_ranks;

    #[test]
    fn ranks_read_the_kv_head_of_their_query_heads() {
        // 8 query heads of 4 elements, 2 KV heads (groups of 4 query heads).
        let even: Vec<(usize, usize)> = (0..4).map(|r| (8 * r, 8 * r + 8)).collect();
        assert_eq!(kv_head_of_ranks(&even, 32, 8, 2), Some(vec![0, 0, 1, 1]));
        // 5 ranks: 2,2,2,1,1 heads: [0,2) [2,4) [4,6) [6,7) [7,8).
        let b = tessera_ir::split_bounds(32, 4, 5).unwrap();
        assert_eq!(kv_head_of_ranks(&b, 32, 8, 2), Some(vec![0, 0, 1, 1, 1]));
        // 3 ranks: 3,3,2 heads: rank 1 holds heads 3..6, two groups.
        let b = tessera_ir::split_bounds(32, 4, 3).unwrap();
        assert_eq!(kv_head_of_ranks(&b, 32, 8, 2), None);
        // Half heads are refused.
        assert_eq!(kv_head_of_ranks(&[(0, 2), (2, 32)], 32, 8, 2), None);
    }
}
