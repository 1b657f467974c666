//! Which steps of a rank's program a drawing shows, when repeated layers collapse.
//!
//! Layers the user expands are drawn one cluster each. The other layers are grouped by their
//! program (the same steps, ops and collectives, ignoring which tensors they touch): each
//! group collapses into one cluster that shows its first layer (the representative) with a
//! repeat count, so a layer whose plan differs (an extra collective, say) is drawn apart and
//! every collective of the plan appears. Steps of the other layers of a group are hidden, and
//! a value they produce is drawn as coming from the representative's step at the same
//! position in its layer.
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::plan::{Step, StepKind, ValueId};

/// A drawn cluster of steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cluster {
    /// Layer drawn (the representative, for the collapsed cluster).
    pub layer: u32,
    /// Layers this cluster stands for (just `layer` when expanded).
    pub stands_for: Vec<u32>,
}

impl Cluster {
    /// Cluster caption, e.g. `layer 3` or `layer ×96 (layers 0..96; showing layer 0)`.
    pub fn label(&self) -> String {
        if self.stands_for.len() <= 1 {
            return format!("layer {}", self.layer);
        }
        format!(
            "layer ×{} (layers {}; showing layer {})",
            self.stands_for.len(),
            compact_ranges(&self.stands_for),
            self.layer
        )
    }
}

/// The visible part of one rank's program.
#[derive(Debug)]
pub(crate) struct LayerView {
    /// Per step: is it drawn?
    pub visible: Vec<bool>,
    /// Per step: index into `clusters` of the cluster it is drawn in.
    pub cluster_of: Vec<Option<usize>>,
    /// Drawn clusters, in layer order.
    pub clusters: Vec<Cluster>,
    /// Per hidden step: the drawn step standing for it (same position in the representative
    /// layer), when there is one.
    pub stand_in: Vec<Option<usize>>,
    /// Producer step of each value on this rank.
    pub producer: BTreeMap<ValueId, usize>,
}

impl LayerView {
    /// Computes the view of `steps` for a plan with `layer_count` repeated layers (0 when
    /// none), expanding the layers in `expanded`. `keep` lists values that must stay drawn
    /// (the plan outputs).
    pub fn new(
        steps: &[Step],
        layer_count: usize,
        expanded: &BTreeSet<u32>,
        keep: &[ValueId],
    ) -> LayerView {
        let mut producer = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            for o in &s.outputs {
                producer.insert(*o, i);
            }
        }
        let mut layers: BTreeSet<u32> = steps.iter().filter_map(|s| s.layer).collect();
        layers.extend(0..layer_count as u32);
        // Steps of each layer, in program order, to group layers and find stand-ins.
        let mut by_layer: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            if let Some(l) = s.layer {
                by_layer.entry(l).or_default().push(i);
            }
        }
        // Collapsed layers grouped by program, in order of their first layer.
        let mut groups: Vec<(Vec<String>, Vec<u32>)> = Vec::new();
        for l in layers.iter().copied().filter(|l| !expanded.contains(l)) {
            let program: Vec<String> = by_layer
                .get(&l)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|&i| step_signature(&steps[i].kind))
                .collect();
            match groups.iter_mut().find(|(p, _)| *p == program) {
                Some((_, members)) => members.push(l),
                None => groups.push((program, vec![l])),
            }
        }
        // The representative (first layer) of each collapsed layer's group.
        let mut representative: BTreeMap<u32, u32> = BTreeMap::new();
        for (_, members) in &groups {
            for &l in members {
                representative.insert(l, members[0]);
            }
        }
        let mut clusters: Vec<Cluster> = layers
            .iter()
            .filter(|l| expanded.contains(l))
            .map(|&l| Cluster {
                layer: l,
                stands_for: vec![l],
            })
            .collect();
        clusters.extend(groups.into_iter().map(|(_, members)| Cluster {
            layer: members[0],
            stands_for: members,
        }));
        clusters.sort_by_key(|c| c.layer);
        let cluster_index: BTreeMap<u32, usize> = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.layer, i))
            .collect();

        let mut visible = vec![true; steps.len()];
        let mut cluster_of = vec![None; steps.len()];
        let mut stand_in = vec![None; steps.len()];
        for (l, idxs) in &by_layer {
            if let Some(&c) = cluster_index.get(l) {
                for &i in idxs {
                    cluster_of[i] = Some(c);
                }
                continue;
            }
            let rep_steps = representative.get(l).and_then(|r| by_layer.get(r));
            for (pos, &i) in idxs.iter().enumerate() {
                visible[i] = false;
                stand_in[i] = rep_steps.and_then(|r| r.get(pos).copied());
            }
        }
        // Steps outside the layers whose every reader is hidden (the weights of hidden
        // layers, say) are hidden too. Readers come later in program order, so one backward
        // pass settles it.
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        for (i, s) in steps.iter().enumerate() {
            for v in &s.inputs {
                if let Some(&p) = producer.get(v) {
                    readers[p].push(i);
                }
            }
        }
        for i in (0..steps.len()).rev() {
            let s = &steps[i];
            let is_kept = s.outputs.iter().any(|o| keep.contains(o));
            if s.layer.is_none()
                && !is_kept
                && !readers[i].is_empty()
                && readers[i].iter().all(|&r| !visible[r])
            {
                visible[i] = false;
            }
        }
        LayerView {
            visible,
            cluster_of,
            clusters,
            stand_in,
            producer,
        }
    }
}

/// What a step does, without the tensors and nodes it touches: equal for the steps at the
/// same position of two layers with the same plan.
fn step_signature(kind: &StepKind) -> String {
    match kind {
        StepKind::LoadWeight { slice, .. } => format!("weight {slice:?}"),
        StepKind::Input { slice, .. } => format!("input {slice:?}"),
        StepKind::Compute { op, .. } => format!("compute {op:?}"),
        StepKind::ShardedGather { offset, rows, .. } => format!("gather {offset} {rows}"),
        other => format!("{other:?}"),
    }
}

/// `0..3, 5, 7..9` for the sorted list `[0, 1, 2, 5, 7, 8]` (end-exclusive ranges).
fn compact_ranges(sorted: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}..{}", end + 1)
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::mlp_stack_plan;

    #[test]
    fn ranges_are_compacted() {
        assert_eq!(compact_ranges(&[0, 1, 2, 5, 7, 8]), "0..3, 5, 7..9");
        assert_eq!(compact_ranges(&[4]), "4");
    }

    #[test]
    fn collapsed_layers_hide_all_but_the_representative() {
        let plan = mlp_stack_plan(4, 2);
        let steps = &plan.ranks[0].steps;
        let view = LayerView::new(steps, 4, &BTreeSet::new(), &plan.outputs);
        assert_eq!(view.clusters.len(), 1);
        assert_eq!(
            view.clusters[0].label(),
            "layer ×4 (layers 0..4; showing layer 0)"
        );
        let shown_layers: BTreeSet<_> = steps
            .iter()
            .zip(&view.visible)
            .filter(|(_, v)| **v)
            .filter_map(|(s, _)| s.layer)
            .collect();
        assert_eq!(shown_layers, BTreeSet::from([0]));
        // Every hidden step maps to the step at the same position of layer 0.
        let per_layer = steps.iter().filter(|s| s.layer == Some(0)).count();
        for (i, s) in steps.iter().enumerate() {
            if let Some(l) = s.layer.filter(|l| *l > 0) {
                let j = view.stand_in[i].expect("same-sized layers have stand-ins");
                assert_eq!(steps[j].layer, Some(0));
                assert_eq!(i - j, l as usize * per_layer);
            }
        }
    }

    #[test]
    fn expanded_layers_get_their_own_clusters() {
        let plan = mlp_stack_plan(4, 2);
        let view = LayerView::new(
            &plan.ranks[1].steps,
            4,
            &BTreeSet::from([1, 2]),
            &plan.outputs,
        );
        let labels: Vec<String> = view.clusters.iter().map(|c| c.label()).collect();
        assert_eq!(
            labels,
            [
                "layer ×2 (layers 0, 3; showing layer 0)",
                "layer 1",
                "layer 2"
            ]
        );
    }
}
