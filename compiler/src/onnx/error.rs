//! Import errors: each displays as one line naming the file, node, op, tensor or shape.
use thiserror::Error;

/// An op the importer cannot convert, as found in the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnsupportedOp {
    /// Operator domain ("" is the default ONNX domain).
    pub domain: String,
    /// ONNX op type.
    pub op_type: String,
    /// Opset version of the domain in the model (0 when the model imports no such domain).
    pub opset: i64,
    /// Name of the node using it.
    pub node: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domain = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(
            f,
            "{} ({domain} v{}, node '{}')",
            self.op_type, self.opset, self.node
        )
    }
}

fn list_unsupported(ops: &[UnsupportedOp]) -> String {
    ops.iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an ONNX model could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The model file could not be read.
    #[error("cannot read '{file}': {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a (complete) ONNX model.
    #[error("'{file}' is not a valid ONNX model: {msg}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// The model uses ops (or opsets / domains) the importer does not support.
    #[error("'{file}': {} unsupported op(s): {}", ops.len(), list_unsupported(ops))]
    Unsupported {
        /// The file.
        file: String,
        /// Every unsupported use, in graph order.
        ops: Vec<UnsupportedOp>,
    },
    /// A `--shape` specification could not be parsed.
    #[error("bad shape specification '{spec}': {msg} (expected NAME=1x128,NAME2=...)")]
    ShapeSpec {
        /// The offending part of the specification.
        spec: String,
        /// What is wrong.
        msg: String,
    },
    /// A `--shape` names a tensor that is not a graph input.
    #[error("--shape names '{name}', which is not an input of the model (inputs: {inputs})")]
    UnknownInput {
        /// The given name.
        name: String,
        /// The model's inputs, comma-separated.
        inputs: String,
    },
    /// An input has a dynamic dimension and no `--shape` fixes it.
    #[error("input '{input}' has dynamic dim {dim} ('{dim_name}') in shape {model_shape}: fix it with --shape {input}=...")]
    DynamicDim {
        /// The input.
        input: String,
        /// Axis of the dynamic dim.
        dim: usize,
        /// Its symbolic name (or `?`).
        dim_name: String,
        /// The model's declared shape, e.g. `[batch, 128]`.
        model_shape: String,
    },
    /// A `--shape` disagrees with the model's declared shape.
    #[error("--shape {input}={given:?} does not match the model's shape {model_shape} for input '{input}': {msg}")]
    InputShapeMismatch {
        /// The input.
        input: String,
        /// The given shape.
        given: Vec<usize>,
        /// The model's declared shape.
        model_shape: String,
        /// What differs.
        msg: String,
    },
    /// A node could not be converted or its shapes do not check.
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        /// Node name.
        node: String,
        /// ONNX op type.
        op: String,
        /// What is wrong (shapes included).
        msg: String,
    },
    /// A node uses a feature of a supported op that Tessera does not implement (e.g. Dropout
    /// in training mode).
    #[error("node '{node}' ({op}): {msg}")]
    UnsupportedFeature {
        /// Node name.
        node: String,
        /// ONNX op type.
        op: String,
        /// What is unsupported.
        msg: String,
    },
    /// An initializer's external-data location is refused: absolute, with a `..`
    /// component, outside the model's folder once links are resolved, missing, or not a
    /// regular file (as onnxruntime confines external data).
    #[error("initializer '{name}': external data location '{location}' of model '{file}' {msg}")]
    ExternalData {
        /// Initializer name.
        name: String,
        /// The `location` as the model gives it.
        location: String,
        /// The model file.
        file: String,
        /// Why it was refused.
        msg: String,
    },
    /// A tensor (initializer, constant, graph input/output) is malformed or missing.
    #[error("tensor '{name}': {msg}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// The imported graph failed validation.
    #[error("imported graph of '{file}' is invalid: {msg}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
}

impl ImportError {
    /// A node error.
    pub(crate) fn node(node: &str, op: &str, msg: impl Into<String>) -> ImportError {
        ImportError::Node {
            node: node.into(),
            op: op.into(),
            msg: msg.into(),
        }
    }

    /// A tensor error.
    pub(crate) fn tensor(name: &str, msg: impl Into<String>) -> ImportError {
        ImportError::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
}
