//! Text summary of an imported model: what `tessera inspect MODEL.onnx` prints.
use super::format::{human_bytes, human_count, joined, shape};
use crate::onnx::ImportReport;
use std::collections::BTreeMap;
use std::fmt::Write;
use tessera_ir::{Graph, TensorKind};

/// Renders inputs/outputs with shapes, the ONNX and IR op histograms, parameters and what
/// the import folded away. `name` names the model in the heading.
pub fn model_summary_text(name: &str, graph: &Graph, report: &ImportReport) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "model {name}");
    let producer = if report.producer.is_empty() {
        "unknown producer"
    } else {
        report.producer.as_str()
    };
    let opsets = joined(
        report
            .opsets
            .iter()
            .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })),
        ", ",
    );
    let _ = writeln!(
        s,
        "  ONNX IR v{}, opsets {opsets}, {producer}",
        report.ir_version
    );

    for (heading, tensors) in [("\ninputs", &graph.inputs), ("outputs", &graph.outputs)] {
        let _ = writeln!(s, "{heading}");
        for t in tensors {
            let info = graph.tensor(*t);
            let _ = writeln!(
                s,
                "  {:<24} {:<6} {}",
                info.name,
                info.dtype.to_string(),
                shape(&info.shape)
            );
        }
    }

    let _ = writeln!(s, "\nparameters");
    let file_backed = graph
        .weights
        .values()
        .filter(|w| w.inline().is_none())
        .count();
    let _ = writeln!(
        s,
        "  {} elements ({}), {} in {} tensors ({} file-backed, {} inline constants)",
        report.parameter_count,
        human_count(report.parameter_count as u64),
        human_bytes(report.parameter_bytes as u64),
        graph.weights.len(),
        file_backed,
        graph.weights.len() - file_backed
    );

    let _ = writeln!(s, "\nimport");
    let _ = writeln!(
        s,
        "  {} ONNX nodes: {} folded into constants, {} IR nodes emitted, {} dead removed → {} IR nodes",
        report.onnx_nodes, report.folded_nodes, report.emitted_nodes, report.dead_nodes_removed, report.final_nodes
    );
    if report.unsupported.is_empty() {
        let _ = writeln!(s, "  unsupported ops: none");
    } else {
        let _ = writeln!(s, "  unsupported ops:");
        for u in &report.unsupported {
            let _ = writeln!(s, "    {u}");
        }
    }

    let _ = writeln!(s, "\nONNX ops (before folding)");
    write_histogram(
        &mut s,
        report.op_histogram.iter().map(|(k, v)| (k.clone(), *v)),
    );
    let mut ir_ops: BTreeMap<String, usize> = BTreeMap::new();
    for n in &graph.nodes {
        *ir_ops.entry(n.op.name()).or_default() += 1;
    }
    let _ = writeln!(s, "\nIR ops (after folding)");
    write_histogram(&mut s, ir_ops.into_iter());
    let activations = graph
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Activation)
        .count();
    let _ = writeln!(s, "\n  {activations} activation tensors");
    s
}

/// Writes `name count` rows, most frequent first (ties by name).
fn write_histogram(s: &mut String, rows: impl Iterator<Item = (String, usize)>) {
    let mut rows: Vec<(String, usize)> = rows.collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (name, n) in rows {
        let _ = writeln!(s, "  {name:<24} {n:>6}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{assert_contains_all, mlp_stack_plan};

    #[test]
    fn summary_lists_io_params_and_histograms() {
        let report = ImportReport {
            canon: Default::default(),
            ir_version: 8,
            opset: 18,
            opsets: BTreeMap::from([(String::new(), 18)]),
            producer: "test".into(),
            onnx_nodes: 14,
            op_histogram: BTreeMap::from([("MatMul".to_string(), 4), ("Shape".to_string(), 4)]),
            folded_nodes: 4,
            emitted_nodes: 10,
            dead_nodes_removed: 0,
            final_nodes: 10,
            parameter_count: 4 * 64 * 256,
            parameter_bytes: 4 * 64 * 256 * 4,
            unsupported: vec![],
        };
        let text = model_summary_text("mlp.onnx", &mlp_stack_plan(2, 2).graph, &report);
        assert_contains_all(
            &text,
            &[
                "x                        f32    4×64",
                "65536 elements (65.54k), 256.0 KiB in 4 tensors (4 file-backed, 0 inline constants)",
                "14 ONNX nodes: 4 folded into constants, 10 IR nodes emitted, 0 dead removed → 10 IR nodes",
                "  MatMul                        4\n  Shape",
                "  Add                           2",
            ],
        );
    }
}
