//! Gemm rules (`Y = α·op(A)·op(B) + β·C`, A and B 2-D, C broadcast to `[M, N]`): the same
//! column, row and row-of-A splits as MatMul, with the transposes deciding which axis of A
//! and B is split, and C following the output (R where it broadcasts) or, for the row split,
//! turned Partial (`ScaleToPartial`: β·C/N on every rank sums to β·C).
use super::matmul::aligned;
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
use tessera_ir::op::GemmAttrs;
use tessera_ir::{Layout, NodeId, Op, TensorId};

/// (attributes, A, B, C) of a Gemm node.
fn gemm<'a>(
    cx: &RuleCx<'a>,
    node: NodeId,
) -> Option<(&'a GemmAttrs, TensorId, TensorId, Option<TensorId>)> {
    let nd = cx.g.node(node);
    let Op::Gemm(g) = &nd.op else {
        return None;
    };
    let (a, b) = (*nd.inputs.first()?, *nd.inputs.get(1)?);
    (cx.shape(a).len() == 2 && cx.shape(b).len() == 2).then_some((
        g,
        a,
        b,
        nd.inputs.get(2).copied(),
    ))
}

/// C's layout when the output is split on axis `o` (C right-aligned to `[M, N]`).
fn bias_along(cx: &RuleCx, c: Option<TensorId>, o: usize) -> Option<(TensorId, Layout)> {
    c.map(|c| (c, aligned(cx.shape(c), 2, o)))
}

fn sig(
    a: (TensorId, Layout),
    b: (TensorId, Layout),
    c: Option<(TensorId, Layout)>,
    out: Layout,
) -> Vec<Sig> {
    let mut inputs = vec![t(a.0, a.1), t(b.0, b.1)];
    inputs.extend(c.map(|(c, l)| t(c, l)));
    vec![(inputs, out, Lowering::Op)]
}

/// A: R, B split on its N axis (0 when transposed), C along N → S(1).
pub(super) fn column(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let Some((g, a, b, c)) = gemm(cx, node) else {
        return vec![];
    };
    let bn = if g.trans_b { 0 } else { 1 };
    sig(
        (a, Layout::Replicated),
        (b, Layout::Split(bn)),
        bias_along(cx, c, 1),
        Layout::Split(1),
    )
}

/// A and B split on K, C Partial → P.
pub(super) fn row(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let Some((g, a, b, c)) = gemm(cx, node) else {
        return vec![];
    };
    let ak = if g.trans_a { 0 } else { 1 };
    let bk = if g.trans_b { 1 } else { 0 };
    let c = c.map(|c| (c, Layout::Partial));
    sig(
        (a, Layout::Split(ak)),
        (b, Layout::Split(bk)),
        c,
        Layout::Partial,
    )
}

/// A split on its M axis (1 when transposed), B: R, C along M → S(0).
pub(super) fn lhs_rows(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let Some((g, a, b, c)) = gemm(cx, node) else {
        return vec![];
    };
    let am = if g.trans_a { 1 } else { 0 };
    sig(
        (a, Layout::Split(am)),
        (b, Layout::Replicated),
        bias_along(cx, c, 0),
        Layout::Split(0),
    )
}
