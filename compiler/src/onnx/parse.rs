//! Phase 1, `parse`: bytes → [`ModelProto`], with the checks that tell an ONNX model from
//! other bytes (a graph, an opset import, an IR version).
use super::ImportError;
use onnx_protobuf::{Message, ModelProto};
use std::collections::BTreeMap;

/// The parsed model plus what later phases need from its header.
pub(crate) struct ParsedModel {
    /// The protobuf model.
    pub model: ModelProto,
    /// Opset version per domain ("" for the default domain, "ai.onnx" folded into "").
    pub opsets: BTreeMap<String, i64>,
}

/// Parses `bytes` as an ONNX `ModelProto`. `file` names the model in errors.
pub(crate) fn parse(bytes: &[u8], file: &str) -> Result<ParsedModel, ImportError> {
    let bad = |msg: String| ImportError::Parse {
        file: file.into(),
        msg,
    };
    if bytes.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    super::wire_guard::check_model(bytes)
        .map_err(|e| bad(format!("not a well-formed ONNX protobuf: {e}")))?;
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| {
        bad(format!(
            "protobuf decoding failed ({e}); the file may be truncated"
        ))
    })?;
    if model.ir_version <= 0 {
        return Err(bad("no ir_version".into()));
    }
    if model.graph.is_none() {
        return Err(bad("no graph".into()));
    }
    if model.opset_import.is_empty() {
        return Err(bad("no opset_import (the file may be truncated)".into()));
    }
    let mut opsets = BTreeMap::new();
    for o in &model.opset_import {
        opsets.insert(canonical_domain(&o.domain).to_string(), o.version);
    }
    Ok(ParsedModel { model, opsets })
}

/// Maps `ai.onnx` to the empty (default) domain name.
pub(crate) fn canonical_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}
