//! Phase 3, `validate`: structural checks ([`Graph::validate`]), a re-check that every
//! recorded tensor type agrees with shape inference, and dead-node removal.
use super::ImportError;
use tessera_ir::{infer::infer_node, DType, Graph};

/// Validates `graph` and removes nodes no output depends on; returns the number removed.
pub(crate) fn validate(graph: &mut Graph, file: &str) -> Result<usize, ImportError> {
    let invalid = |msg: String| ImportError::Invalid {
        file: file.into(),
        msg,
    };
    graph.validate().map_err(|e| invalid(e.to_string()))?;
    for node in &graph.nodes {
        let ins: Vec<(DType, &[usize])> = node
            .inputs
            .iter()
            .map(|&t| (graph.tensor(t).dtype, graph.tensor(t).shape.as_slice()))
            .collect();
        let outs = infer_node(&node.name, &node.op, &ins, node.outputs.len())
            .map_err(|e| invalid(e.to_string()))?;
        let recorded: Vec<_> = node
            .outputs
            .iter()
            .map(|&t| (graph.tensor(t).dtype, graph.tensor(t).shape.clone()))
            .collect();
        if outs != recorded {
            return Err(invalid(format!(
                "node '{}': recorded outputs {recorded:?} differ from inferred {outs:?}",
                node.name
            )));
        }
    }
    for (id, w) in &graph.weights {
        let t = graph.tensor(*id);
        if t.shape != w.shape || t.dtype != w.logical_dtype() {
            return Err(invalid(format!(
                "weight '{}' metadata differs from its tensor",
                w.name
            )));
        }
    }
    let removed = graph.remove_dead_nodes();
    graph.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(removed)
}
