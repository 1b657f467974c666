//! The logical graph as DOT: one box per node with its op and output shape(s), inputs and
//! outputs as distinct nodes, weights listed on the nodes that read them.
use super::format::{dot_escape, shape};
use std::fmt::Write;
use tessera_ir::{Graph, TensorKind};

/// How many weight names a node label lists before summarising the rest.
const MAX_WEIGHTS_ON_LABEL: usize = 3;

/// Renders `graph` as a DOT digraph named `title`.
pub fn graph_to_dot(graph: &Graph, title: &str) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "digraph \"{}\" {{", dot_escape(title));
    let _ = writeln!(
        s,
        "  graph [rankdir=TB, fontname=\"Helvetica\", label=\"{}\", labelloc=t];",
        dot_escape(title)
    );
    let _ = writeln!(s, "  node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for t in &graph.inputs {
        let info = graph.tensor(*t);
        let label = format!("input {}\n{} {}", info.name, shape(&info.shape), info.dtype);
        let _ = writeln!(
            s,
            "  t{} [label=\"{}\", shape=invhouse, style=filled, fillcolor=\"#d8f3dc\", class=\"input\"];",
            t.0,
            dot_escape(&label)
        );
    }
    let producers = graph.producers();
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut label = format!("{}\n{}", node.op.name(), node.name);
        for o in &node.outputs {
            let info = graph.tensor(*o);
            let _ = write!(label, "\n→ {} {}", shape(&info.shape), info.dtype);
        }
        let weights: Vec<String> = node
            .inputs
            .iter()
            .filter(|t| graph.tensor(**t).kind == TensorKind::Weight)
            .map(|t| {
                let w = graph.tensor(*t);
                format!("{} [{}]", w.name, shape(&w.shape))
            })
            .collect();
        for w in weights.iter().take(MAX_WEIGHTS_ON_LABEL) {
            let _ = write!(label, "\nw: {w}");
        }
        if weights.len() > MAX_WEIGHTS_ON_LABEL {
            let _ = write!(
                label,
                "\n(+{} more weights)",
                weights.len() - MAX_WEIGHTS_ON_LABEL
            );
        }
        let _ = writeln!(
            s,
            "  n{i} [label=\"{}\", shape=box, style=\"rounded,filled\", fillcolor=\"#e9ecef\", class=\"op\"];",
            dot_escape(&label)
        );
        for t in &node.inputs {
            let info = graph.tensor(*t);
            let from = match (info.kind, producers[t.index()]) {
                (TensorKind::Activation, Some(p)) => format!("n{}", p.0),
                (TensorKind::Input, _) => format!("t{}", t.0),
                _ => continue,
            };
            let _ = writeln!(
                s,
                "  {from} -> n{i} [label=\"{}\"];",
                dot_escape(&shape(&info.shape))
            );
        }
    }
    for (k, t) in graph.outputs.iter().enumerate() {
        let info = graph.tensor(*t);
        let label = format!(
            "output {}\n{} {}",
            info.name,
            shape(&info.shape),
            info.dtype
        );
        let _ = writeln!(
            s,
            "  out{k} [label=\"{}\", shape=house, style=filled, fillcolor=\"#ffe8cc\", class=\"output\"];",
            dot_escape(&label)
        );
        let from = match producers[t.index()] {
            Some(p) => format!("n{}", p.0),
            None => format!("t{}", t.0),
        };
        if producers[t.index()].is_some() || info.kind == TensorKind::Input {
            let _ = writeln!(s, "  {from} -> out{k};");
        }
    }
    let _ = writeln!(s, "}}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::mlp_stack_plan;

    #[test]
    fn every_node_and_edge_is_drawn() {
        let plan = mlp_stack_plan(2, 2);
        let dot = graph_to_dot(&plan.graph, "mlp");
        assert_eq!(dot.matches("class=\"op\"").count(), plan.graph.nodes.len());
        assert_eq!(dot.matches("class=\"input\"").count(), 1);
        assert_eq!(dot.matches("class=\"output\"").count(), 1);
        // Activation/input edges: fc1(x), act(fc1), fc2(act), residual(x|prev, fc2) per block.
        assert_eq!(dot.matches(" -> n").count(), 2 * 5);
        assert!(
            dot.contains("MatMul\\nblocks.0.fc1\\n→ 4×256 f32\\nw: blocks.0.fc1.weight [64×256]"),
            "{dot}"
        );
    }
}
