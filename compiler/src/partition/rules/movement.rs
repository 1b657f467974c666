//! Data-movement rules: Reshape, Transpose, Split/Slice/Concat, Gather.
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
use tessera_ir::{Layout, NodeId, Op};

/// Output axis a split of input axis `a` survives to through a reshape, if any: the leading
/// element counts agree and either `a` merges into the outer factor of output axis b, or
/// output axis b is the outer factor of `a`, with N | out[b].
pub fn reshape_split_axis(input: &[usize], output: &[usize], a: usize, n: usize) -> Option<usize> {
    let prefix: usize = input[..a].iter().product();
    let d = input[a];
    (0..output.len()).find(|&b| {
        let e = output[b];
        if output[..b].iter().product::<usize>() != prefix
            || !e.is_multiple_of(n)
            || !d.is_multiple_of(n)
            || e == 0
        {
            return false;
        }
        // a is the outer factor of b: e = d · in[a+1..a+1+k]
        let merges = reaches_product(d, &input[a + 1..], e);
        // b is the outer factor of a: d = e · out[b+1..b+1+k]
        let splits = reaches_product(e, &output[b + 1..], d);
        merges || splits
    })
}

/// Whether `start` times some prefix of `dims` (possibly empty) equals `target`.
fn reaches_product(start: usize, dims: &[usize], target: usize) -> bool {
    let mut acc = start;
    let mut hit = acc == target;
    for &x in dims {
        if hit || acc > target {
            break;
        }
        acc *= x;
        hit = acc == target;
    }
    hit
}

pub(super) fn reshape(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    if !matches!(nd.op, Op::Reshape(_)) {
        return vec![];
    }
    let (x, y) = (nd.inputs[0], nd.outputs[0]);
    let (ins, outs) = (cx.shape(x), cx.shape(y));
    (0..ins.len())
        .filter_map(|a| {
            let b = reshape_split_axis(ins, outs, a, cx.n)?;
            Some((vec![t(x, Layout::Split(a))], Layout::Split(b), Lowering::Op))
        })
        .collect()
}

pub(super) fn transpose(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Transpose(tr) = &nd.op else {
        return vec![];
    };
    (0..tr.perm.len())
        .map(|i| {
            (
                vec![t(nd.inputs[0], Layout::Split(tr.perm[i]))],
                Layout::Split(i),
                Lowering::Op,
            )
        })
        .collect()
}

pub(super) fn slice_unsplit(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let rank = cx.shape(nd.inputs[0]).len();
    let busy: Vec<usize> = match &nd.op {
        Op::Split(s) => vec![s.axis],
        Op::Slice(s) => s.axes.clone(),
        Op::Concat(c) => vec![c.axis],
        _ => return vec![],
    };
    (0..rank)
        .filter(|a| !busy.contains(a))
        .map(|a| {
            (
                nd.inputs.iter().map(|&i| t(i, Layout::Split(a))).collect(),
                Layout::Split(a),
                Lowering::Op,
            )
        })
        .collect()
}

pub(super) fn gather_vocab(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    match &nd.op {
        Op::Gather(g) if g.axis == 0 => vec![(
            vec![
                t(nd.inputs[0], Layout::Split(0)),
                t(nd.inputs[1], Layout::Replicated),
            ],
            Layout::Partial,
            Lowering::ShardedGather,
        )],
        _ => vec![],
    }
}

pub(super) fn gather_split(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::Gather(g) = &nd.op else { return vec![] };
    let (data, idx) = (nd.inputs[0], nd.inputs[1]);
    let ir = cx.shape(idx).len();
    let mut v: Vec<Sig> = (0..cx.shape(data).len())
        .filter(|&a| a != g.axis)
        .map(|a| {
            let o = if a < g.axis { a } else { a - 1 + ir };
            (
                vec![t(data, Layout::Split(a)), t(idx, Layout::Replicated)],
                Layout::Split(o),
                Lowering::Op,
            )
        })
        .collect();
    v.extend((0..ir).map(|j| {
        (
            vec![t(data, Layout::Replicated), t(idx, Layout::Split(j))],
            Layout::Split(g.axis + j),
            Lowering::Op,
        )
    }));
    v
}
