//! Megatron's key/value-head replication, as a meta-rule over the table.
//!
//! Grouped-query attention with fewer key/value heads than ranks cannot split K and V N
//! ways by heads. Megatron gives each rank the key/value head its query heads read, so
//! several ranks compute the same head ([`Layout::Block`]: an axis cut in `kv` equal
//! blocks, rank `r` holding its query heads' block). A form that is valid on `kv` ranks
//! with every operand split in `kv` equal chunks is valid on `N` ranks with every split
//! replaced by a block: each rank computes block `b` exactly as rank `b` of `kv` would. So
//! the rule instantiates every other rule of the table for `kv` ranks and keeps the forms
//! whose layouts are only splits (into equal chunks) and replicas, as blocks; the e-graph
//! then turns a block into the split of the query heads by a free local slice
//! (`Conv::BlockSlice`), where every rank's chunk lies inside its block.
use super::{dsl, RuleCx, Sig};
use crate::partition::form::{Lowering, Operand};
use tessera_ir::{Layout, NodeId};

/// Rules whose forms are not plain "split in equal chunks" forms.
const SKIP: &[&str] = &["kv-block", "attention-kv-replicated"];

pub(super) fn kv_block(cx: &RuleCx, node: NodeId, out: usize) -> Vec<Sig> {
    let out_tensor = cx.g.node(node).outputs[out];
    if !cx.grains.on_kv_path(out_tensor) {
        return vec![];
    }
    let Some(kv) = cx.grains.kv_blocks(cx.n) else {
        return vec![];
    };
    if kv < 2 {
        return vec![];
    }
    let on_kv = RuleCx {
        g: cx.g,
        n: kv,
        producers: cx.producers.clone(),
        limits: cx.limits,
        shared: cx.shared.clone(),
        user_rules: Default::default(),
        grains: cx.grains.clone(),
    };
    // A split of an axis in `kv` equal chunks becomes a block; replicas stay. `extent_of`
    // gives the operand's extent along an axis (a weight section's own).
    let block = |extent_of: &dyn Fn(usize) -> Option<usize>, l: Layout| -> Option<Layout> {
        match l {
            Layout::Replicated => Some(l),
            Layout::Split(a) => {
                let extent = extent_of(a)?;
                let even = cx
                    .grains
                    .bounds(extent, kv)
                    .is_some_and(|b| b.iter().all(|(s, e)| e - s == extent / kv));
                (extent.is_multiple_of(kv) && even).then_some(Layout::Block(a))
            }
            _ => None,
        }
    };
    let shape_extent =
        |t: tessera_ir::TensorId| move |a: usize| cx.g.tensor(t).shape.get(a).copied();
    let mut sigs = Vec::new();
    for rule in dsl::table().iter().filter(|r| !SKIP.contains(&r.name())) {
        for (inputs, out_layout, lowering) in dsl::instantiate(rule, &on_kv, node, out) {
            if !matches!(lowering, Lowering::Op | Lowering::FusedSection { .. }) {
                continue;
            }
            let Some(out_b @ Layout::Block(_)) = block(&shape_extent(out_tensor), out_layout)
            else {
                continue;
            };
            let ins = inputs
                .iter()
                .map(|o| match o {
                    Operand::Tensor { t, layout } => block(&shape_extent(*t), *layout)
                        .map(|l| Operand::Tensor { t: *t, layout: l }),
                    // A weight section (a fused projection's K or V columns): its own extent.
                    Operand::View { t, section, layout } => {
                        let (axis, start, end) = *section;
                        let extent = |a: usize| {
                            if a == axis {
                                Some(end - start)
                            } else {
                                cx.g.tensor(*t).shape.get(a).copied()
                            }
                        };
                        block(&extent, *layout).map(|l| Operand::View {
                            t: *t,
                            section: *section,
                            layout: l,
                        })
                    }
                })
                .collect::<Option<Vec<_>>>();
            if let Some(ins) = ins {
                sigs.push((ins, out_b, lowering));
            }
        }
    }
    sigs
}
