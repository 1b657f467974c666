//! The mesh part of `tessera inspect PLAN.json`: the data groups of a `[D, T]` mesh, what
//! each holds and computes, and what crosses the data axis (nothing but the batch: no
//! collective, 0 bytes), with the cost model's links inside and across groups.
use super::format::{human_bytes, human_count, joined};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use tessera_ir::plan::{Plan, StepKind};

/// One data group of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// Group index (0 on a 1-D mesh).
    pub group: usize,
    /// Its ranks.
    pub ranks: Vec<usize>,
    /// Collectives one rank of the group runs (every rank runs the same).
    pub collectives: u64,
    /// Logical bytes those collectives move.
    pub collective_bytes: u64,
    /// Bytes of weights on the group's fullest rank.
    pub max_param_bytes: u64,
    /// Peak activations on the group's fullest rank.
    pub max_peak_activation_bytes: u64,
    /// FLOPs of the group's ranks together.
    pub flops: u64,
}

/// What the data axis of a plan splits and moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataAxisRow {
    /// Data groups (D).
    pub groups: usize,
    /// Devices per group (T).
    pub group_size: usize,
    /// Batch axis of each input (None: every group gets the whole input).
    pub inputs: BTreeMap<String, Option<usize>>,
    /// Batch axis of each output, in output order.
    pub outputs: Vec<usize>,
    /// Collectives whose members span several groups (0 in a forward pass).
    pub collectives: u64,
    /// Logical bytes they move.
    pub bytes: u64,
    /// Latency of the links across groups (cost model).
    pub inter_group_alpha_s: f64,
    /// Bandwidth of the links across groups (cost model).
    pub inter_group_beta_bytes_per_s: f64,
    /// Whether the cost model tells those links from the links inside a group.
    pub inter_group_distinct: bool,
}

/// Rows of every data group (one row on a 1-D mesh).
pub fn group_rows(plan: &Plan) -> Vec<GroupRow> {
    let n = plan.ranks.len();
    plan.mesh
        .groups()
        .into_iter()
        .enumerate()
        .map(|(group, ranks)| {
            let ranks: Vec<usize> = ranks.into_iter().filter(|&r| r < n).collect();
            let (mut collectives, mut collective_bytes) = (0, 0);
            if let Some(&r) = ranks.first() {
                for s in &plan.ranks[r].steps {
                    if let StepKind::Collective { bytes, .. } = &s.kind {
                        collectives += 1;
                        collective_bytes += bytes;
                    }
                }
            }
            let est: Vec<_> = plan
                .estimates
                .iter()
                .filter(|e| ranks.contains(&e.rank))
                .collect();
            GroupRow {
                group,
                collectives,
                collective_bytes,
                max_param_bytes: est.iter().map(|e| e.param_bytes).max().unwrap_or(0),
                max_peak_activation_bytes: est
                    .iter()
                    .map(|e| e.peak_activation_bytes)
                    .max()
                    .unwrap_or(0),
                flops: est.iter().map(|e| e.flops).fold(0u64, u64::saturating_add),
                ranks,
            }
        })
        .collect()
}

/// The data axis of a plan over a `[D, T]` mesh (None on a 1-D mesh).
pub fn data_axis(plan: &Plan) -> Option<DataAxisRow> {
    let data = plan.data.as_ref()?;
    let mesh = &plan.mesh;
    let (mut collectives, mut bytes) = (0, 0);
    for c in &plan.collectives {
        let first = c.group.first().map(|&m| mesh.group_of(m));
        if c.group.iter().any(|&m| Some(mesh.group_of(m)) != first) {
            collectives += 1;
            bytes += c.bytes;
        }
    }
    let link = crate::cost::inter_group_link(&plan.cost_model);
    Some(DataAxisRow {
        groups: mesh.data_groups(),
        group_size: mesh.group_size(),
        inputs: data.inputs.clone(),
        outputs: data.outputs.clone(),
        collectives,
        bytes,
        inter_group_alpha_s: link.alpha_s,
        inter_group_beta_bytes_per_s: link.beta_bytes_per_s,
        inter_group_distinct: plan.cost_model.inter_group.is_some(),
    })
}

/// The text of the mesh section (empty on a 1-D mesh).
pub(crate) fn render(groups: &[GroupRow], data: Option<&DataAxisRow>) -> String {
    let mut s = String::new();
    let Some(d) = data else {
        return s;
    };
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        s,
        "\ndata axis: {} groups of {} devices (collectives and totals below are per group)",
        d.groups, d.group_size
    );
    let inputs = joined(
        d.inputs.iter().map(|(k, a)| match a {
            Some(a) => format!("{k} split on axis {a}"),
            None => format!("{k} whole to every group"),
        }),
        ", ",
    );
    let _ = writeln!(s, "  inputs: {inputs}");
    let _ = writeln!(
        s,
        "  outputs gathered along axis {}",
        joined(&d.outputs, ", ")
    );
    let _ = writeln!(
        s,
        "  across groups: {} collectives, {} moved (links across groups: {:.1} µs, {}/s{})",
        d.collectives,
        human_bytes(d.bytes),
        d.inter_group_alpha_s * 1e6,
        human_bytes(d.inter_group_beta_bytes_per_s as u64),
        if d.inter_group_distinct {
            ""
        } else {
            ", the same as inside a group"
        }
    );
    let _ = writeln!(
        s,
        "  {:>5}  {:<16}  {:>11}  {:>12}  {:>12}  {:>16}  {:>10}",
        "group", "ranks", "collectives", "bytes", "params/rank", "peak activations", "FLOPs"
    );
    for g in groups {
        let _ = writeln!(
            s,
            "  {:>5}  {:<16}  {:>11}  {:>12}  {:>12}  {:>16}  {:>10}",
            g.group,
            joined(&g.ranks, ","),
            g.collectives,
            human_bytes(g.collective_bytes),
            human_bytes(g.max_param_bytes),
            human_bytes(g.max_peak_activation_bytes),
            human_count(g.flops)
        );
    }
    s
}

/// `tessera dot`: the title's note on where rank `rank` sits in a `[D, T]` mesh (empty on a
/// 1-D mesh).
pub(crate) fn dot_title_note(plan: &Plan, rank: usize) -> String {
    let Some(_) = &plan.data else {
        return String::new();
    };
    let m = &plan.mesh;
    let g = m.group_of(rank);
    let ranks = m.groups().get(g).map_or(String::new(), |r| joined(r, ","));
    format!(
        ", member {} of data group {g} (ranks {ranks}); mesh {}x{}",
        rank % m.group_size().max(1),
        m.data_groups(),
        m.group_size()
    )
}

/// `tessera dot`: one cluster per data group listing its ranks, the drawn rank filled (empty
/// on a 1-D mesh).
pub(crate) fn dot_mesh_clusters(plan: &Plan, rank: usize) -> String {
    let mut s = String::new();
    if plan.data.is_none() {
        return s;
    }
    let _ = writeln!(s, "  subgraph cluster_mesh {{");
    let _ = writeln!(
        s,
        "    graph [label=\"data groups (no collective across them)\", style=dashed, color=\"#868e96\"];"
    );
    for (g, ranks) in plan.mesh.groups().iter().enumerate() {
        let _ = writeln!(s, "    subgraph cluster_group{g} {{");
        let _ = writeln!(
            s,
            "      graph [label=\"data group {g}\", style=filled, fillcolor=\"#f1f3f5\", color=\"#868e96\"];"
        );
        for r in ranks {
            let fill = if *r == rank { "#ffd43b" } else { "#ffffff" };
            let _ = writeln!(
                s,
                "      mesh_r{r} [label=\"rank {r}\", shape=box, style=filled, fillcolor=\"{fill}\", class=\"mesh\"];"
            );
        }
        let _ = writeln!(s, "    }}");
    }
    let _ = writeln!(s, "  }}");
    s
}

/// `tessera dot`: the data axis' part of an input step's label on rank `rank` (its group's
/// rows of the batch) or of output `k`'s label (gathered along its batch axis); empty on a
/// 1-D mesh.
pub(crate) fn dot_step_note(plan: &Plan, rank: usize, step: &tessera_ir::plan::Step) -> String {
    let (Some(data), StepKind::Input { tensor, .. }) = (&plan.data, &step.kind) else {
        return String::new();
    };
    let Some(info) = plan.graph.tensors.get(tensor.index()) else {
        return String::new();
    };
    match data.inputs.get(&info.name).copied().flatten() {
        Some(a) => {
            let b = info.shape.get(a).copied().unwrap_or(0);
            let g = plan.mesh.group_of(rank);
            format!(
                "\ndata group {g}: axis {a} [{}:{}] of {}",
                g * b,
                (g + 1) * b,
                b * plan.mesh.data_groups()
            )
        }
        None => "\nwhole to every data group".into(),
    }
}

/// `tessera dot`: how output `k` gathers over the data groups (empty on a 1-D mesh).
pub(crate) fn dot_output_note(plan: &Plan, k: usize) -> String {
    match plan.data.as_ref().and_then(|d| d.outputs.get(k)) {
        Some(a) => format!(
            "\nthis group's slice; gathered along axis {a} over {} groups",
            plan.mesh.data_groups()
        ),
        None => String::new(),
    }
}
