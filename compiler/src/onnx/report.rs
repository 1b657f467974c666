//! The import report: what was in the model and what the import did to it.
use super::UnsupportedOp;
use serde::Serialize;
use std::collections::BTreeMap;

/// Summary of one import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// ONNX IR version of the file.
    pub ir_version: i64,
    /// Default-domain opset.
    pub opset: i64,
    /// Every imported opset, by domain ("" = default).
    pub opsets: BTreeMap<String, i64>,
    /// Producer name and version, e.g. `pytorch 2.1.0`.
    pub producer: String,
    /// Nodes in the ONNX graph.
    pub onnx_nodes: usize,
    /// ONNX op type → node count.
    pub op_histogram: BTreeMap<String, usize>,
    /// ONNX nodes whose outputs were folded into constants.
    pub folded_nodes: usize,
    /// IR nodes emitted before dead-node removal.
    pub emitted_nodes: usize,
    /// IR nodes removed as dead.
    pub dead_nodes_removed: usize,
    /// IR nodes in the final graph.
    pub final_nodes: usize,
    /// Elements over all weights of the final graph.
    pub parameter_count: usize,
    /// Bytes over all weights of the final graph.
    pub parameter_bytes: usize,
    /// Unsupported ops (empty for a successful import; an import with any fails with
    /// [`super::ImportError::Unsupported`]).
    pub unsupported: Vec<UnsupportedOp>,
    /// What canonicalisation did.
    pub canon: crate::canon::CanonReport,
}
