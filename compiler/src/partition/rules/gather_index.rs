//! GatherND and GatherElements split along axes on which every output element reads only
//! its own slice: the ops are pure lookups, so a split of the indices (and of the data where
//! the two are aligned) gives each rank its chunk of the output with the same attributes.
//!
//! * GatherND with `batch_dims = b` (output = indices' leading axes, then data's axes past
//!   `b + k`): a batch axis `a < b` splits data and indices; a leading axis of the indices
//!   past the batch dims (`b ≤ a < q − 1`) splits the indices alone, the data replicated.
//!   Exporters look positions up this way (a decoder's mask by constant (batch, position)
//!   pairs).
//! * GatherElements along `axis` (output = indices' shape): any other axis on which data
//!   and indices have the same extent splits both; `axis` itself splits the indices alone,
//!   the data replicated.
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
use tessera_ir::{Layout, NodeId, Op};

/// GatherND's forms (see the module docs).
pub(super) fn gather_nd(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::GatherNd(a) = &nd.op else {
        return vec![];
    };
    let (data, idx) = (nd.inputs[0], nd.inputs[1]);
    let q = cx.shape(idx).len();
    let b = a.batch_dims;
    (0..q.saturating_sub(1))
        .map(|axis| {
            let data_layout = if axis < b {
                Layout::Split(axis)
            } else {
                Layout::Replicated
            };
            (
                vec![t(data, data_layout), t(idx, Layout::Split(axis))],
                Layout::Split(axis),
                Lowering::Op,
            )
        })
        .collect()
}

/// GatherElements' forms (see the module docs).
pub(super) fn gather_elements(cx: &RuleCx, node: NodeId, _: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    let Op::GatherElements(a) = &nd.op else {
        return vec![];
    };
    let (data, idx) = (nd.inputs[0], nd.inputs[1]);
    let (ds, is) = (cx.shape(data), cx.shape(idx));
    (0..is.len())
        .filter_map(|k| {
            // The gather axis: each rank looks its rows of indices up in the whole data.
            let data_layout = match k == a.axis {
                true => Layout::Replicated,
                false if ds.get(k) == is.get(k) => Layout::Split(k),
                false => return None,
            };
            Some((
                vec![t(data, data_layout), t(idx, Layout::Split(k))],
                Layout::Split(k),
                Lowering::Op,
            ))
        })
        .collect()
}
