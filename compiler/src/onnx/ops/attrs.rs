//! Strict node checking against the op's schema, as the ONNX checker (and onnxruntime)
//! does it: every attribute of a node must be one its op's schema version (at the model's
//! opset) declares, with the declared type, given once; required attributes must be
//! present; the number of inputs must be within the version's bounds (so an input form of a
//! later opset, e.g. ReduceMean's `axes` input in an opset-17 model, is refused). The
//! schemas are the generated [`ATTR_TABLE`](super::attr_table::ATTR_TABLE).
use super::attr_table::{SchemaRow, ATTR_TABLE};
use crate::onnx::ImportError;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::NodeProto;
use std::collections::HashSet;

/// The type of an attribute (ONNX `AttributeProto.AttributeType`, without `UNDEFINED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrKind {
    /// `FLOAT`.
    Float,
    /// `INT`.
    Int,
    /// `STRING`.
    String,
    /// `TENSOR`.
    Tensor,
    /// `GRAPH`.
    Graph,
    /// `SPARSE_TENSOR`.
    SparseTensor,
    /// `TYPE_PROTO`.
    TypeProto,
    /// `FLOATS`.
    Floats,
    /// `INTS`.
    Ints,
    /// `STRINGS`.
    Strings,
    /// `TENSORS`.
    Tensors,
    /// `GRAPHS`.
    Graphs,
    /// `SPARSE_TENSORS`.
    SparseTensors,
    /// `TYPE_PROTOS`.
    TypeProtos,
}

impl AttrKind {
    /// The kind of a proto type; None for `UNDEFINED` or a value outside the enum.
    fn of(t: Result<AttributeType, i32>) -> Option<AttrKind> {
        use AttributeType as T;
        Some(match t.ok()? {
            T::UNDEFINED => return None,
            T::FLOAT => AttrKind::Float,
            T::INT => AttrKind::Int,
            T::STRING => AttrKind::String,
            T::TENSOR => AttrKind::Tensor,
            T::GRAPH => AttrKind::Graph,
            T::SPARSE_TENSOR => AttrKind::SparseTensor,
            T::TYPE_PROTO => AttrKind::TypeProto,
            T::FLOATS => AttrKind::Floats,
            T::INTS => AttrKind::Ints,
            T::STRINGS => AttrKind::Strings,
            T::TENSORS => AttrKind::Tensors,
            T::GRAPHS => AttrKind::Graphs,
            T::SPARSE_TENSORS => AttrKind::SparseTensors,
            T::TYPE_PROTOS => AttrKind::TypeProtos,
        })
    }

    /// The ONNX spelling (`INT`, `INTS`, ...).
    fn onnx_name(self) -> &'static str {
        match self {
            AttrKind::Float => "FLOAT",
            AttrKind::Int => "INT",
            AttrKind::String => "STRING",
            AttrKind::Tensor => "TENSOR",
            AttrKind::Graph => "GRAPH",
            AttrKind::SparseTensor => "SPARSE_TENSOR",
            AttrKind::TypeProto => "TYPE_PROTO",
            AttrKind::Floats => "FLOATS",
            AttrKind::Ints => "INTS",
            AttrKind::Strings => "STRINGS",
            AttrKind::Tensors => "TENSORS",
            AttrKind::Graphs => "GRAPHS",
            AttrKind::SparseTensors => "SPARSE_TENSORS",
            AttrKind::TypeProtos => "TYPE_PROTOS",
        }
    }
}

/// The schema version of `op_type` in force at default-domain `opset`, or None when the
/// table has no version of it at that opset.
fn schema(op_type: &str, opset: i64) -> Option<&'static SchemaRow> {
    ATTR_TABLE
        .iter()
        .filter(|row| row.0 == op_type && row.1 <= opset)
        .max_by_key(|row| row.1)
}

/// Checks `node` against its op's schema at `opset`: an unknown attribute name, a wrong
/// or missing type, a repeated name, a missing required attribute, or too few or too many
/// inputs is an error naming the node (`name`), op and attribute.
pub(crate) fn check_attributes(
    node: &NodeProto,
    name: &str,
    opset: i64,
) -> Result<(), ImportError> {
    let op = node.op_type.as_str();
    let err = |msg: String| ImportError::node(name, op, msg);
    let Some(&(_, since, min_inputs, max_inputs, attrs)) = schema(op, opset) else {
        return Ok(());
    };
    let n = node.input.len();
    if n < min_inputs || n > max_inputs {
        let range = if max_inputs == min_inputs {
            format!("{min_inputs}")
        } else if max_inputs >= 1 << 31 {
            format!("at least {min_inputs}")
        } else {
            format!("{min_inputs} to {max_inputs}")
        };
        return Err(err(format!(
            "{n} input(s), but {op} at opset {opset} (schema version {since}) takes {range}"
        )));
    }
    let mut seen = HashSet::new();
    for a in &node.attribute {
        let Some(&(_, kind, _)) = attrs.iter().find(|(n, _, _)| *n == a.name) else {
            let known: Vec<&str> = attrs.iter().map(|(n, _, _)| *n).collect();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(err(format!(
                "unknown attribute '{}' ({op} at opset {opset} has: {known})",
                a.name
            )));
        };
        if !seen.insert(a.name.as_str()) {
            return Err(err(format!("attribute '{}' is given twice", a.name)));
        }
        match AttrKind::of(a.type_.enum_value()) {
            Some(k) if k == kind => {}
            Some(k) => {
                return Err(err(format!(
                    "attribute '{}' has type {}, but {op} expects {}",
                    a.name,
                    k.onnx_name(),
                    kind.onnx_name()
                )))
            }
            None => {
                return Err(err(format!(
                    "attribute '{}' has no type (UNDEFINED), but {op} expects {}",
                    a.name,
                    kind.onnx_name()
                )))
            }
        }
    }
    if let Some((missing, kind, _)) = attrs
        .iter()
        .find(|(n, _, required)| *required && !seen.contains(n))
    {
        return Err(err(format!(
            "required attribute '{missing}' ({}) is missing",
            kind.onnx_name()
        )));
    }
    Ok(())
}
