//! Elementwise, partial-sum and normalisation rules.
use super::matmul::aligned;
use super::{elementwise_like, t, RuleCx, Sig};
use crate::partition::form::Lowering;
use tessera_ir::op::{BinaryOp, ReduceKind, UnaryOp};
use tessera_ir::{Layout, NodeId, Op};

pub(super) fn split(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    if !elementwise_like(&nd.op) {
        return vec![];
    }
    let out = cx.shape(nd.outputs[0]);
    let ro = out.len();
    (0..ro)
        .filter(|&ax| out[ax].is_multiple_of(cx.n) && out[ax] > 1)
        .map(|ax| {
            let ins = nd
                .inputs
                .iter()
                .map(|&i| t(i, aligned(cx.shape(i), ro, ax)))
                .collect();
            (ins, Layout::Split(ax), Lowering::Op)
        })
        .collect()
}

fn all(cx: &RuleCx, node: NodeId, layout: Layout) -> Vec<Sig> {
    let nd = cx.g.node(node);
    vec![(
        nd.inputs.iter().map(|&i| t(i, layout)).collect(),
        Layout::Partial,
        Lowering::Op,
    )]
}

pub(super) fn partial(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let linear = match &nd.op {
        Op::Binary(b) => matches!(b.kind, BinaryOp::Add | BinaryOp::Sub),
        Op::Unary(u) => matches!(u.kind, UnaryOp::Neg | UnaryOp::Identity),
        Op::Reduce(r) => matches!(r.kind, ReduceKind::Sum | ReduceKind::Mean),
        Op::Reshape(_)
        | Op::Transpose(_)
        | Op::Expand(_)
        | Op::Slice(_)
        | Op::Split(_)
        | Op::Concat(_) => true,
        _ => false,
    };
    if linear {
        all(cx, node, Layout::Partial)
    } else {
        vec![]
    }
}

pub(super) fn scale_partial(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let (p, r) = (Layout::Partial, Layout::Replicated);
    match &nd.op {
        Op::Binary(b) if b.kind == BinaryOp::Mul => vec![
            (
                vec![t(nd.inputs[0], p), t(nd.inputs[1], r)],
                p,
                Lowering::Op,
            ),
            (
                vec![t(nd.inputs[0], r), t(nd.inputs[1], p)],
                p,
                Lowering::Op,
            ),
        ],
        Op::Binary(b) if b.kind == BinaryOp::Div => {
            vec![(
                vec![t(nd.inputs[0], p), t(nd.inputs[1], r)],
                p,
                Lowering::Op,
            )]
        }
        Op::Gather(_) => vec![(
            vec![t(nd.inputs[0], p), t(nd.inputs[1], r)],
            p,
            Lowering::Op,
        )],
        _ => vec![],
    }
}

pub(super) fn norm_keep_split(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let x = nd.inputs[0];
    let rank = cx.shape(x).len();
    // (input split axes allowed, map input axis -> output axis)
    let axes: Vec<(usize, usize)> = match &nd.op {
        Op::Softmax(s) => (0..rank).filter(|&a| a != s.axis).map(|a| (a, a)).collect(),
        Op::CumSum(c) => (0..rank).filter(|&a| a != c.axis).map(|a| (a, a)).collect(),
        Op::LayerNorm(s) | Op::RmsNorm(s) => (0..s.axis.min(rank)).map(|a| (a, a)).collect(),
        Op::Trilu(_) => (0..rank.saturating_sub(2)).map(|a| (a, a)).collect(),
        Op::Reduce(r) => (0..rank)
            .filter(|a| !r.axes.contains(a))
            .map(|a| {
                (
                    a,
                    if r.keepdims {
                        a
                    } else {
                        a - r.axes.iter().filter(|&&x| x < a).count()
                    },
                )
            })
            .collect(),
        _ => return vec![],
    };
    axes.into_iter()
        .map(|(a, o)| {
            let mut ins = vec![t(x, Layout::Split(a))];
            ins.extend(nd.inputs[1..].iter().map(|&i| t(i, Layout::Replicated)));
            (ins, Layout::Split(o), Lowering::Op)
        })
        .collect()
}
