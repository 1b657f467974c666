//! ONNX Attention on 4-D inputs `[B, heads, S, D]`: split by heads. Every head is
//! independent, so Q, K, V (and the past cache) split on axis 1 give each rank whole heads
//! and every output split on axis 1; a mask follows on its head axis (R where it
//! broadcasts). Grouped-query heads stay consistent because N divides both head counts:
//! local query head h reads local K/V head h / (Hq / Hkv), as globally. 3-D inputs carry
//! head counts as attributes and stay replicated.
use super::matmul::aligned;
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
use tessera_ir::{Layout, NodeId, Op};

pub(super) fn heads(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Attention(a) = &nd.op else {
        return vec![];
    };
    if cx.shape(nd.inputs[0]).len() != 4 || a.has_nonpad {
        return vec![];
    }
    let mut inputs = vec![
        t(nd.inputs[0], Layout::Split(1)),
        t(nd.inputs[1], Layout::Split(1)),
        t(nd.inputs[2], Layout::Split(1)),
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
    vec![(inputs, Layout::Split(1), Lowering::Op)]
}
