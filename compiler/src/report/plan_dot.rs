//! One rank's program of a plan as DOT.
//!
//! Steps are nodes; each edge is a rank-local value labelled with its local shape and layout
//! and coloured by layout (R grey, S(axis) green, P orange). Collectives are octagons with
//! their kind and bytes, weights are cylinders marked with the slice this rank loads.
//! Repeated layers with the same plan collapse into one cluster with a repeat count; a
//! layer whose plan differs is drawn apart (see [`PlanDotOptions`]).
//! Every collective node carries `class="collective <kind>"`, a stable marker for tools.
use super::format::{dot_escape, human_bytes, shape};
use super::layer_view::LayerView;
use super::ReportError;
use std::collections::BTreeSet;
use std::fmt::Write;
use tessera_ir::plan::{CollectiveKind, Plan, Step, StepKind};
use tessera_ir::Layout;

/// A half-open range of layer indices, as given to `--layers` (`0..2`, `0..=2`, `3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRange {
    /// First layer.
    pub start: u32,
    /// One past the last layer.
    pub end: u32,
}

impl std::str::FromStr for LayerRange {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<LayerRange, ReportError> {
        let bad = |msg: &str| ReportError::BadLayerRange {
            range: s.to_string(),
            msg: msg.to_string(),
        };
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| bad(&format!("'{}' is not a layer index", x.trim())))
        };
        let (start, end) = if let Some((a, b)) = s.split_once("..=") {
            (
                num(a)?,
                num(b)?
                    .checked_add(1)
                    .ok_or_else(|| bad("end is too large"))?,
            )
        } else if let Some((a, b)) = s.split_once("..") {
            (num(a)?, num(b)?)
        } else {
            let a = num(s)?;
            (a, a + 1)
        };
        if start >= end {
            return Err(bad("empty range: expected START..END with START < END"));
        }
        Ok(LayerRange { start, end })
    }
}

/// What to draw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDotOptions {
    /// Rank whose program is drawn.
    pub rank: usize,
    /// Layers drawn expanded; the others collapse into one cluster per distinct layer plan.
    pub expand: Option<LayerRange>,
}

/// Renders one rank's program of `plan` as a DOT digraph.
pub fn plan_to_dot(plan: &Plan, opts: &PlanDotOptions) -> Result<String, ReportError> {
    let devices = plan.ranks.len();
    let program =
        plan.ranks
            .iter()
            .find(|r| r.rank == opts.rank)
            .ok_or(ReportError::UnknownRank {
                rank: opts.rank,
                devices,
            })?;
    let layer_count = plan.layers.as_ref().map_or(0, |l| l.count);
    let expanded: BTreeSet<u32> = match opts.expand {
        None => BTreeSet::new(),
        Some(r) => {
            if layer_count == 0 {
                return Err(ReportError::BadLayerRange {
                    range: format!("{}..{}", r.start, r.end),
                    msg: "the plan has no repeated layers".into(),
                });
            }
            if r.end as usize > layer_count {
                return Err(ReportError::BadLayerRange {
                    range: format!("{}..{}", r.start, r.end),
                    msg: format!("the plan has layers 0..{layer_count}"),
                });
            }
            (r.start..r.end).collect()
        }
    };
    let steps = &program.steps;
    let view = LayerView::new(steps, layer_count, &expanded, &plan.outputs);
    let value = |v: tessera_ir::plan::ValueId| {
        plan.values
            .get(v.index())
            .ok_or_else(|| ReportError::InconsistentPlan(format!("value {} does not exist", v.0)))
    };

    let model = std::path::Path::new(&plan.source.path)
        .file_name()
        .map_or_else(
            || plan.source.path.clone(),
            |f| f.to_string_lossy().into_owned(),
        );
    let title = format!(
        "{model} — rank {} of {devices}{}",
        opts.rank,
        super::mesh::dot_title_note(plan, opts.rank)
    );
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "digraph \"plan\" {{");
    let legend =
        "edges: local shape + layout — R grey, S(axis) green, P orange; octagons: collectives";
    let _ = writeln!(
        s,
        "  graph [rankdir=TB, fontname=\"Helvetica\", labelloc=t, label=\"{}\\n{}\"];",
        dot_escape(&title),
        dot_escape(legend)
    );
    let _ = writeln!(s, "  node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=9];");

    // Nodes outside clusters first, then one subgraph per cluster.
    let mut cluster_nodes: Vec<String> = vec![String::new(); view.clusters.len()];
    let scalar = scalar_weight_steps(plan, steps);
    for (i, step) in steps.iter().enumerate() {
        if !view.visible[i] || scalar[i] {
            continue;
        }
        let consts: Vec<String> = step
            .inputs
            .iter()
            .filter_map(|v| view.producer.get(v))
            .filter(|&&p| scalar[p])
            .filter_map(|&p| match &steps[p].kind {
                StepKind::LoadWeight { tensor, .. } => plan
                    .graph
                    .tensors
                    .get(tensor.index())
                    .map(|t| t.name.clone()),
                _ => None,
            })
            .collect();
        // Scalar constants are listed on their reader instead of drawn as nodes.
        let extra = if consts.is_empty() {
            String::new()
        } else {
            format!("\n+ {}", consts.join(", "))
        };
        let extra = extra + &super::mesh::dot_step_note(plan, opts.rank, step);
        let line = step_node(plan, i, step, &extra)?;
        match view.cluster_of[i] {
            Some(c) => cluster_nodes[c].push_str(&format!("  {line}\n")),
            None => {
                let _ = writeln!(s, "  {line}");
            }
        }
    }
    s += &super::mesh::dot_mesh_clusters(plan, opts.rank);
    for (c, cluster) in view.clusters.iter().enumerate() {
        let _ = writeln!(s, "  subgraph cluster_layer{} {{", cluster.layer);
        let (style, fill) = if cluster.stands_for.len() > 1 {
            ("filled,bold", "#f1f3f5")
        } else {
            ("filled", "#f8f9fa")
        };
        let _ = writeln!(
            s,
            "    graph [label=\"{}\", style=\"{style}\", fillcolor=\"{fill}\", color=\"#868e96\"];",
            dot_escape(&cluster.label())
        );
        s.push_str(&cluster_nodes[c]);
        let _ = writeln!(s, "  }}");
    }

    for (i, step) in steps.iter().enumerate() {
        if !view.visible[i] {
            continue;
        }
        for v in step
            .inputs
            .iter()
            .filter(|v| view.producer.get(v).is_none_or(|&p| !scalar[p]))
        {
            let &p = view.producer.get(v).ok_or_else(|| {
                ReportError::InconsistentPlan(format!(
                    "rank {} step {i} ({}): value {} is read but never produced",
                    opts.rank,
                    plan.describe_step(step),
                    v.0
                ))
            })?;
            let val = value(*v)?;
            let Some((from, prefix, extra)) = drawn_source(&view, steps, p) else {
                continue;
            };
            let label = format!("{prefix}{} {}", shape(&val.shape), val.layout);
            let _ = writeln!(
                s,
                "  s{from} -> s{i} [label=\"{}\", color=\"{}\", fontcolor=\"{}\"{extra}];",
                dot_escape(&label),
                layout_colour(val.layout),
                layout_colour(val.layout)
            );
        }
    }
    for (k, v) in plan.outputs.iter().enumerate() {
        let val = value(*v)?;
        let name = plan
            .graph
            .tensors
            .get(val.tensor.index())
            .map_or("?", |t| t.name.as_str());
        let label = format!(
            "output {name}\n{} {}{}",
            shape(&val.shape),
            val.dtype,
            super::mesh::dot_output_note(plan, k)
        );
        let _ = writeln!(
            s,
            "  out{k} [label=\"{}\", shape=house, style=filled, fillcolor=\"#ffe8cc\", class=\"output\"];",
            dot_escape(&label)
        );
        if let Some((from, prefix, extra)) = view
            .producer
            .get(v)
            .and_then(|&p| drawn_source(&view, steps, p))
        {
            let label = format!("{prefix}{} {}", shape(&val.shape), val.layout);
            let _ = writeln!(
                s,
                "  s{from} -> out{k} [label=\"{}\"{extra}];",
                dot_escape(&label)
            );
        }
    }
    let _ = writeln!(s, "}}");
    Ok(s)
}

/// The drawn step an edge from producer step `p` starts at, with a label prefix and extra
/// edge attributes: `p` itself when drawn, else its stand-in in the collapsed cluster
/// (dashed, labelled with the hidden layer), else None.
fn drawn_source(
    view: &LayerView,
    steps: &[Step],
    p: usize,
) -> Option<(usize, String, &'static str)> {
    if view.visible[p] {
        return Some((p, String::new(), ""));
    }
    let q = view.stand_in[p]?;
    let prefix = steps[p]
        .layer
        .map_or(String::new(), |l| format!("from layer {l}: "));
    Some((q, prefix, ", style=dashed"))
}

/// Per step: is it the load of a whole scalar weight (drawn on its readers' labels)?
fn scalar_weight_steps(plan: &Plan, steps: &[Step]) -> Vec<bool> {
    steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::LoadWeight {
                tensor,
                slice: None,
            } => plan
                .graph
                .tensors
                .get(tensor.index())
                .is_some_and(|t| tessera_ir::numel(&t.shape) == 1),
            _ => false,
        })
        .collect()
}

/// Edge colour of a layout.
fn layout_colour(layout: Layout) -> &'static str {
    match layout {
        Layout::Replicated => "#495057",
        Layout::Split(_) => "#2b8a3e",
        Layout::Block(_) => "#1971c2",
        Layout::Partial => "#d9480f",
    }
}

/// Fill colour of a collective kind.
fn collective_colour(kind: CollectiveKind) -> &'static str {
    match kind {
        CollectiveKind::AllReduce => "#ffa8a8",
        CollectiveKind::AllGather => "#a5d8ff",
        CollectiveKind::ReduceScatter => "#ffd8a8",
        CollectiveKind::AllToAll => "#d0bfff",
        CollectiveKind::Broadcast => "#96f2d7",
    }
}

/// The DOT node statement of step `i`; `extra` is appended to its label.
fn step_node(plan: &Plan, i: usize, step: &Step, extra: &str) -> Result<String, ReportError> {
    let tensor_name = |t: tessera_ir::TensorId| {
        plan.graph
            .tensors
            .get(t.index())
            .map(|t| t.name.clone())
            .ok_or_else(|| ReportError::InconsistentPlan(format!("tensor {} does not exist", t.0)))
    };
    let out_layout = step
        .outputs
        .first()
        .and_then(|v| plan.values.get(v.index()))
        .map(|v| v.layout);
    let (label, attrs) = match &step.kind {
        StepKind::LoadWeight { tensor, slice } => {
            let full = plan
                .graph
                .tensors
                .get(tensor.index())
                .map(|t| shape(&t.shape))
                .unwrap_or_default();
            let mut label = format!("weight {}\n{full}", tensor_name(*tensor)?);
            if let Some(sl) = slice {
                let _ = write!(label, "\nslice axis {} [{}:{}]", sl.axis, sl.start, sl.end);
            }
            let fill = if slice.is_some() {
                "#d3f9d8"
            } else {
                "#fff9db"
            };
            (
                label,
                format!("shape=cylinder, style=filled, fillcolor=\"{fill}\", class=\"weight\""),
            )
        }
        StepKind::Input { tensor, slice } => {
            let mut label = format!("input {}", tensor_name(*tensor)?);
            if let Some(sl) = slice {
                let _ = write!(label, "\nslice axis {} [{}:{}]", sl.axis, sl.start, sl.end);
            }
            (
                label,
                "shape=invhouse, style=filled, fillcolor=\"#d8f3dc\", class=\"input\"".to_string(),
            )
        }
        StepKind::Compute { node, op } => {
            let name = plan
                .graph
                .nodes
                .get(node.index())
                .map(|n| n.name.clone())
                .ok_or_else(|| {
                    ReportError::InconsistentPlan(format!("node {} does not exist", node.0))
                })?;
            let fill = match out_layout {
                Some(Layout::Split(_)) => "#ebfbee",
                Some(Layout::Partial) => "#fff4e6",
                _ => "#f1f3f5",
            };
            (
                format!("{}\n{name}", op.name()),
                format!("shape=box, style=\"rounded,filled\", fillcolor=\"{fill}\", class=\"op\""),
            )
        }
        StepKind::ShardedGather { node, offset, rows } => {
            let name = plan
                .graph
                .nodes
                .get(node.index())
                .map_or("?", |n| n.name.as_str());
            (
                format!("ShardedGather\n{name}\nrows [{offset}:{}]", offset + rows),
                "shape=box, style=\"rounded,filled\", fillcolor=\"#fff4e6\", class=\"op\""
                    .to_string(),
            )
        }
        StepKind::LocalSlice { slice } => (
            format!(
                "LocalSlice\naxis {} [{}:{}]",
                slice.axis, slice.start, slice.end
            ),
            "shape=box, style=\"rounded,dashed\", class=\"local\"".to_string(),
        ),
        StepKind::ScaleToPartial { n } => (
            format!("÷{n} (R → P)"),
            "shape=box, style=\"rounded,dashed\", class=\"local\"".to_string(),
        ),
        StepKind::Collective {
            collective,
            axis,
            to_axis,
            group,
            bytes,
            counts,
        } => {
            let moved = step
                .inputs
                .first()
                .and_then(|v| plan.values.get(v.index()))
                .and_then(|v| plan.graph.tensors.get(v.tensor.index()))
                .map_or(String::new(), |t| t.name.clone());
            let mut label = format!("{}\n{moved}\n{}", collective.as_str(), human_bytes(*bytes));
            match (axis, to_axis) {
                (Some(a), Some(b)) => {
                    let _ = write!(label, "\naxis {a} → {b}");
                }
                (Some(a), None) => {
                    let _ = write!(label, "\naxis {a}");
                }
                _ => {}
            }
            if group.len() != plan.ranks.len() {
                let _ = write!(label, "\ngroup {group:?}");
            }
            if !counts.is_empty() {
                let _ = write!(label, "\nragged {counts:?}");
            }
            (
                label,
                format!(
                    "shape=doubleoctagon, style=\"filled,bold\", fillcolor=\"{}\", class=\"collective {}\"",
                    collective_colour(*collective),
                    collective.as_str()
                ),
            )
        }
    };
    Ok(format!(
        "s{i} [label=\"{}{}\", {attrs}];",
        dot_escape(&label),
        dot_escape(extra)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{assert_contains_all, mlp_stack_plan};

    /// Draws rank `rank` of `plan` with the layers in `expand` (a layer range) expanded.
    fn draw(plan: &Plan, rank: usize, expand: Option<&str>) -> Result<String, ReportError> {
        let expand = expand.map(|e| e.parse().expect("test layer ranges parse"));
        plan_to_dot(plan, &PlanDotOptions { rank, expand })
    }

    /// Draws rank 0 of a 6-block plan with the layers in `expand` expanded, and checks that
    /// it has `all_reduces` all-reduce nodes and `clusters` layer clusters.
    fn draw_six_blocks(expand: Option<&str>, all_reduces: usize, clusters: usize) -> String {
        let dot = draw(&mlp_stack_plan(6, 2), 0, expand).unwrap();
        assert_eq!(count_collectives(&dot, "all_reduce"), all_reduces, "{dot}");
        assert_eq!(dot.matches("subgraph cluster_").count(), clusters, "{dot}");
        dot
    }

    fn count_collectives(dot: &str, kind: &str) -> usize {
        dot.matches(&format!("class=\"collective {kind}\"")).count()
    }

    /// Every edge endpoint is a declared node (DOT would silently invent undeclared ones).
    fn assert_edges_declared(dot: &str) {
        let declared: BTreeSet<&str> = dot
            .lines()
            .filter(|l| l.contains("[label=") && !l.contains("->"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for line in dot.lines().filter(|l| l.contains(" -> ")) {
            let mut parts = line.split_whitespace();
            let from = parts.next().unwrap();
            let to = parts.nth(1).unwrap();
            assert!(
                declared.contains(from) && declared.contains(to),
                "undeclared endpoint in {line}\n{dot}"
            );
        }
    }

    #[test]
    fn one_block_draws_one_all_reduce_and_sliced_weights() {
        let dot = draw(&mlp_stack_plan(1, 2), 1, None).unwrap();
        assert_eq!(count_collectives(&dot, "all_reduce"), 1);
        assert_contains_all(
            &dot,
            &[
                "all_reduce\\nblocks.0.fc2_out\\n1.00 KiB",
                // Rank 1 holds the second half of fc1's columns and of fc2's rows.
                "weight blocks.0.fc1.weight\\n64×256\\nslice axis 1 [128:256]",
                "weight blocks.0.fc2.weight\\n256×64\\nslice axis 0 [128:256]",
                // Edge labels carry local shape and layout.
                "label=\"4×128 S(1)\"",
                "label=\"4×64 P\"",
            ],
        );
        assert!(!dot.contains("subgraph"), "{dot}");
        assert_edges_declared(&dot);
    }

    #[test]
    fn repeated_layers_collapse_into_one_cluster() {
        let dot = draw_six_blocks(None, 1, 1);
        assert_contains_all(
            &dot,
            &[
                "layer ×6 (layers 0..6; showing layer 0)",
                // The output reads the last layer's result through its layer-0 stand-in.
                "s7 -> out0 [label=\"from layer 5: 4×64 R\", style=dashed]",
            ],
        );
        assert_eq!(
            dot.matches("from layer").count(),
            1,
            "hidden→hidden edges are not drawn: {dot}"
        );
        assert_edges_declared(&dot);
    }

    #[test]
    fn a_layer_whose_plan_differs_is_drawn_apart() {
        // Layer 2 reduce-scatters where the others all-reduce: the collapsed drawing must
        // still show every kind of collective the plan has.
        let mut plan = mlp_stack_plan(4, 2);
        for program in &mut plan.ranks {
            for step in program.steps.iter_mut().filter(|s| s.layer == Some(2)) {
                if let StepKind::Collective { collective, .. } = &mut step.kind {
                    *collective = CollectiveKind::ReduceScatter;
                }
            }
        }
        let dot = draw(&plan, 0, None).unwrap();
        assert_eq!(count_collectives(&dot, "all_reduce"), 1, "{dot}");
        assert_eq!(count_collectives(&dot, "reduce_scatter"), 1, "{dot}");
        assert_contains_all(
            &dot,
            &["layer ×3 (layers 0..2, 3; showing layer 0)", "layer 2"],
        );
        assert_eq!(dot.matches("subgraph cluster_").count(), 2, "{dot}");
        assert_edges_declared(&dot);
    }

    #[test]
    fn expanded_layers_are_drawn_and_linked() {
        let dot = draw_six_blocks(Some("2..4"), 3, 3);
        assert_contains_all(
            &dot,
            &[
                "label=\"layer 2\"",
                "label=\"layer 3\"",
                "layer ×4 (layers 0..2, 4..6; showing layer 0)",
                // Layer 2 reads layer 1's output, drawn from the representative (layer 0).
                "from layer 1: 4×64 R",
            ],
        );
        assert_edges_declared(&dot);
    }

    #[test]
    fn bad_rank_and_ranges_are_errors() {
        let plan = mlp_stack_plan(3, 2);
        let e = draw(&plan, 2, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rank 2 is not in the plan: it has 2 ranks (0..2)"
        );
        let e = draw(&plan, 0, Some("1..5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "layer range '1..5': the plan has layers 0..3"
        );
        assert!("2..1".parse::<LayerRange>().is_err());
        assert!("a..b"
            .parse::<LayerRange>()
            .unwrap_err()
            .to_string()
            .contains("'a' is not a layer index"));
        assert_eq!(
            "0..=2".parse::<LayerRange>().unwrap(),
            LayerRange { start: 0, end: 3 }
        );
        assert_eq!(
            "4".parse::<LayerRange>().unwrap(),
            LayerRange { start: 4, end: 5 }
        );
        let e = draw(&mlp_stack_plan(1, 2), 0, Some("0..1")).unwrap_err();
        assert!(e.to_string().contains("no repeated layers"));
    }
}
