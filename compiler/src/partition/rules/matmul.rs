//! The fused-projection section rewrite (Split/Slice pushed through X·W + b), the built-in
//! generator of the `fused-section` rule, and the broadcast alignment the table's
//! `aligned` layouts use.
use super::{t, RuleCx, Sig};
use crate::partition::form::{Lowering, Operand};
use tessera_ir::op::BinaryOp;
use tessera_ir::{Layout, NodeId, Op, TensorId};

use tessera_ir::op::BinaryAttrs;

/// Layout of an operand of rank `r` aligned right to an output of rank `ro`, for a split of
/// output axis `o`: R where the operand lacks the axis or broadcasts it (extent 1).
pub(crate) fn aligned(shape: &[usize], ro: usize, o: usize) -> Layout {
    let r = shape.len();
    if o + r < ro {
        return Layout::Replicated;
    }
    let ax = o + r - ro;
    if shape[ax] == 1 {
        Layout::Replicated
    } else {
        Layout::Split(ax)
    }
}

/// (X, W, bias, matmul node, add node) of a projection.
type Projection = (TensorId, TensorId, Option<TensorId>, NodeId, Option<NodeId>);

/// Matches `Y = X·W (+ b)` with `W` a 2-D weight and `b` a 1-D weight: (X, W, b, matmul, add).
fn projection(cx: &RuleCx, y: TensorId) -> Option<Projection> {
    let p = cx.producers[y.index()]?;
    let nd = cx.g.node(p);
    match &nd.op {
        Op::MatMul(_) => {
            let (x, w) = (nd.inputs[0], nd.inputs[1]);
            (cx.is_weight(w) && cx.shape(w).len() == 2 && !cx.is_weight(x))
                .then_some((x, w, None, p, None))
        }
        Op::Binary(BinaryAttrs {
            kind: BinaryOp::Add,
        }) => {
            for (m, b) in [(nd.inputs[0], nd.inputs[1]), (nd.inputs[1], nd.inputs[0])] {
                if !cx.is_weight(b)
                    || cx.shape(b).len() != 1
                    || cx.shape(b) != [*cx.shape(y).last()?]
                {
                    continue;
                }
                if let Some((x, w, None, mmn, None)) = projection(cx, m) {
                    if cx.shape(m) == cx.shape(y) {
                        return Some((x, w, Some(b), mmn, Some(p)));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

pub(super) fn fused_section(cx: &RuleCx, node: NodeId, out: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let y = nd.inputs[0];
    let last = cx.shape(y).len().saturating_sub(1);
    let (start, end) = match &nd.op {
        Op::Split(s) if s.axis == last => {
            let start: usize = s.sizes[..out].iter().sum();
            (start, start + s.sizes[out])
        }
        Op::Slice(s)
            if s.axes == [last]
                && s.steps == [1]
                && s.starts[0] >= 0
                && s.ends[0] > s.starts[0] =>
        {
            (
                s.starts[0] as usize,
                (s.ends[0] as usize).min(cx.shape(y)[last]),
            )
        }
        _ => return vec![],
    };
    let Some((x, w, b, mmn, add)) = projection(cx, y) else {
        return vec![];
    };
    if end <= start || cx.grains.bounds(end - start, cx.n).is_none() {
        return vec![];
    }
    let mut inputs = vec![
        t(x, Layout::Replicated),
        Operand::View {
            t: w,
            section: (1, start, end),
            layout: Layout::Split(1),
        },
    ];
    if let Some(b) = b {
        inputs.push(Operand::View {
            t: b,
            section: (0, start, end),
            layout: Layout::Split(0),
        });
    }
    vec![(
        inputs,
        Layout::Split(last),
        Lowering::FusedSection { matmul: mmn, add },
    )]
}
