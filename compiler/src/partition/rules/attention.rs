//! ONNX Attention split by heads. Every head is independent, so Q, K, V split on their head
//! axis (4-D `[B, heads, S, D]`: axis 1; 3-D `[B, S, heads·D]`: axis 2, whole heads per rank
//! when N divides both head counts, the lowering dividing the head-count attributes by N) and
//! the past cache on axis 1 give each rank whole heads; Y splits like Q, the qk matrix on
//! axis 1; a mask follows on its head axis (R where it broadcasts). Grouped-query heads stay
//! consistent: local query head h reads local K/V head h / (Hq / Hkv), as globally.
use super::matmul::aligned;
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
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
    let mut inputs = vec![
        t(nd.inputs[0], Layout::Split(axis)),
        t(nd.inputs[1], Layout::Split(axis)),
        t(nd.inputs[2], Layout::Split(axis)),
    ];
    let mut next = 3;
    if a.has_mask {
        let m = nd.inputs[next];
        inputs.push(t(m, aligned(cx.shape(m), 4, 1)));
        next += 1;
    }
    if a.has_past {
        inputs.push(t(nd.inputs[next], Layout::Split(1)));
        inputs.push(t(nd.inputs[next + 1], Layout::Split(1)));
    }
    let out = if a.qk_output { 1 } else { axis };
    vec![(inputs, Layout::Split(out), Lowering::Op)]
}
