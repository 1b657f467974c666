//! ONNX op converters: one op family per file, a registry table mapping `op_type` to a
//! converter function, and the [`NodeCx`] view of a node that converters read.
//!
//! A converter turns one ONNX node (whose inputs are typed, statically shaped and possibly
//! constant) into [`Lowered`]: a short chain of IR ops (usually one) or constant outputs.
//! The walker then folds, infers and emits what the converter returned.
mod activation;
mod activation_extra;
mod attention;
mod attr_table;
mod attrs;
mod bitwise;
mod channel_norm;
mod constant;
mod contrib;
mod conv;
mod dropout;
mod elementwise;
mod gather;
mod layout_extra;
mod logic;
mod matmul;
mod misc;
mod norm_extra;
mod normalization;
mod one_hot;
mod pad;
mod pool;
mod quantize;
mod quantize_activation;
mod reduce;
mod resize;
mod rotary;
mod scatter;
mod shape_ops;
mod topk;

use super::ImportError;
pub(crate) use attrs::check_attributes;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use tessera_ir::{DType, Op, Tensor, Weight};

/// Converts one node.
pub(crate) type Converter = fn(&NodeCx) -> Result<Lowered, ImportError>;

/// A registry entry: the ONNX op type, the range of default-domain opsets in which the op
/// has the form we convert, and its converter.
///
/// `until` comes from onnx's schema history (`onnx.defs.get_all_schemas_with_history()`, onnx
/// 1.23.2, whose latest opset is [`MAX_OPSET`](super::MAX_OPSET)): it is the last opset
/// before a schema version whose semantics the converter does not implement, or
/// `MAX_OPSET` when every newer version only adds element types Tessera does not support
/// (float8e8m0, int2/uint2, float6, ...) or changes nothing the converter relies on. The
/// families' tables list each op's versions after 23 and what changed.
#[derive(Clone, Copy)]
pub(crate) struct OpEntry {
    /// ONNX op type.
    pub op_type: &'static str,
    /// First opset version (of the default domain) supported.
    pub since: i64,
    /// Last opset version supported.
    pub until: i64,
    /// Converter.
    pub convert: Converter,
    /// Operator domain: `""` for the default ONNX domain, `"com.microsoft"` for
    /// onnxruntime's contrib ops. `since` and `until` are versions of this domain's opset.
    pub domain: &'static str,
}

/// onnxruntime's contrib-op domain.
pub(crate) const MS_DOMAIN: &str = "com.microsoft";

/// An entry supported from `since` up to [`MAX_OPSET`](super::MAX_OPSET) (an op whose newer
/// schema changes semantics is written as an `OpEntry` literal with its own `until`).
const fn entry(op_type: &'static str, since: i64, convert: Converter) -> OpEntry {
    OpEntry {
        op_type,
        since,
        until: super::MAX_OPSET,
        convert,
        domain: "",
    }
}

/// An entry of onnxruntime's `com.microsoft` domain (whose only opset version is 1).
const fn ms_entry(op_type: &'static str, convert: Converter) -> OpEntry {
    OpEntry {
        op_type,
        since: 1,
        until: 1,
        convert,
        domain: MS_DOMAIN,
    }
}

/// Every family's table.
const FAMILIES: &[&[OpEntry]] = &[
    activation::OPS,
    activation_extra::OPS,
    attention::OPS,
    bitwise::OPS,
    channel_norm::OPS,
    constant::OPS,
    contrib::OPS,
    conv::OPS,
    dropout::OPS,
    elementwise::OPS,
    gather::OPS,
    layout_extra::OPS,
    logic::OPS,
    matmul::OPS,
    misc::OPS,
    norm_extra::OPS,
    normalization::OPS,
    one_hot::OPS,
    pad::OPS,
    pool::OPS,
    quantize::OPS,
    quantize_activation::OPS,
    reduce::OPS,
    resize::OPS,
    rotary::OPS,
    scatter::OPS,
    shape_ops::OPS,
    topk::OPS,
];

/// The registry, by (domain, op type).
fn registry() -> &'static HashMap<(&'static str, &'static str), OpEntry> {
    static REG: OnceLock<HashMap<(&'static str, &'static str), OpEntry>> = OnceLock::new();
    REG.get_or_init(|| {
        FAMILIES
            .iter()
            .flat_map(|f| f.iter())
            .map(|e| ((e.domain, e.op_type), *e))
            .collect()
    })
}

/// The converter for `op_type` of `domain` (`""`: the default domain) at that domain's
/// `opset`, if supported.
pub(crate) fn lookup(domain: &str, op_type: &str, opset: i64) -> Option<Converter> {
    registry()
        .get(&(domain, op_type))
        .filter(|e| (e.since..=e.until).contains(&opset))
        .map(|e| e.convert)
}

/// All supported default-domain op types with their supported opset range
/// `(op, first, last)` (within [`MIN_OPSET`](super::MIN_OPSET)..=
/// [`MAX_OPSET`](super::MAX_OPSET)), sorted by name.
pub fn supported_ops() -> Vec<(&'static str, i64, i64)> {
    let mut v: Vec<_> = registry()
        .values()
        .filter(|e| e.domain.is_empty())
        .map(|e| {
            (
                e.op_type,
                e.since.max(super::MIN_OPSET),
                e.until.min(super::MAX_OPSET),
            )
        })
        .collect();
    v.sort();
    v
}

/// What a converter produced.
pub(crate) enum Lowered {
    /// IR ops to emit in order; the outputs of the last step are the node's outputs.
    Steps(Vec<Step>),
    /// The node's outputs are these constants (Shape, Constant, Range, ...).
    Consts(Vec<Tensor>),
    /// IR ops to emit in order; node output `i` is output `outputs[i].1` of step
    /// `outputs[i].0` (for lowerings whose outputs come from different steps).
    Picked {
        /// The steps.
        steps: Vec<Step>,
        /// (step, output) of each node output.
        outputs: Vec<(usize, usize)>,
    },
    /// The node's single output is this weight (a quantised initializer, DequantizeLinear);
    /// the walker names it after the output.
    Weight(Weight),
}

/// One IR op of a lowering.
pub(crate) struct Step {
    /// The op.
    pub op: Op,
    /// Its inputs.
    pub inputs: Vec<Ref>,
}

/// An input of a [`Step`].
#[derive(Clone)]
pub(crate) enum Ref {
    /// Input `i` of the ONNX node.
    In(usize),
    /// Output `k` of step `j` of the same lowering.
    Prev(usize, usize),
    /// A constant made by the converter.
    Const(Tensor),
    /// A weight made by the converter (a quantised weight read by an op of the lowering,
    /// such as MatMulInteger's or MatMulNBits's), materialised under its own name.
    Weight(Box<Weight>),
}

impl Lowered {
    /// One op applied to the given node inputs.
    pub fn op(op: Op, inputs: &[usize]) -> Lowered {
        Lowered::Steps(vec![Step {
            op,
            inputs: inputs.iter().map(|&i| Ref::In(i)).collect(),
        }])
    }
}

/// A typed input of a node, with its value when it is a constant.
pub(crate) struct InputView<'a> {
    /// Value name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Static shape.
    pub shape: &'a [usize],
    /// The value, when known at import time.
    pub konst: Option<&'a Tensor>,
    /// The initializer (or weight) it is, when it is one.
    pub source: Option<&'a Weight>,
}

/// What a converter sees of a node.
pub(crate) struct NodeCx<'a> {
    /// The ONNX node.
    pub node: &'a NodeProto,
    /// Its name (generated when the model has none).
    pub name: &'a str,
    /// Opset version of the node's domain in the model.
    pub opset: i64,
    /// Inputs; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<InputView<'a>>>,
    /// Value names read by some node or listed as graph outputs.
    pub used: &'a HashSet<String>,
}

impl<'a> NodeCx<'a> {
    /// An error about this node.
    pub fn err(&self, msg: impl Into<String>) -> ImportError {
        ImportError::node(self.name, &self.node.op_type, msg)
    }

    /// A feature of this node's op that Tessera does not implement.
    pub fn unsupported(&self, msg: impl Into<String>) -> ImportError {
        ImportError::UnsupportedFeature {
            node: self.name.into(),
            op: self.node.op_type.clone(),
            msg: msg.into(),
        }
    }

    /// Number of inputs given (including omitted ones before the last given).
    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// A required input.
    pub fn input(&self, i: usize) -> Result<&InputView<'a>, ImportError> {
        self.opt_input(i)
            .ok_or_else(|| self.err(format!("missing required input {i}")))
    }

    /// True when output `k` of the node is named and read by some node or is a graph output.
    pub fn output_used(&self, k: usize) -> bool {
        self.node
            .output
            .get(k)
            .is_some_and(|o| !o.is_empty() && self.used.contains(o))
    }

    /// An optional input.
    pub fn opt_input(&self, i: usize) -> Option<&InputView<'a>> {
        self.inputs.get(i).and_then(|x| x.as_ref())
    }

    /// Rank of a required input.
    pub fn rank(&self, i: usize) -> Result<usize, ImportError> {
        Ok(self.input(i)?.shape.len())
    }

    /// The value of an input that must be known at import time.
    pub fn const_input(&self, i: usize) -> Result<&'a Tensor, ImportError> {
        let v = self.input(i)?;
        v.konst.ok_or_else(|| {
            self.err(format!(
                "input {i} ('{}') must be a constant but depends on runtime values",
                v.name
            ))
        })
    }

    /// An optional constant input as integers.
    pub fn opt_const_ints(&self, i: usize) -> Result<Option<Vec<i64>>, ImportError> {
        match self.opt_input(i) {
            None => Ok(None),
            Some(_) => Ok(Some(self.const_input(i)?.to_i64_vec())),
        }
    }

    /// An attribute by name.
    pub fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// An int attribute, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    /// A float attribute, or `default`.
    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    /// An ints attribute.
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A string attribute.
    pub fn attr_str(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// A tensor attribute.
    pub fn attr_tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.attr(name)
            .filter(|a| a.type_.enum_value() == Ok(AttributeType::TENSOR))
            .and_then(|a| a.t.as_ref())
    }

    /// Normalises a possibly negative axis for a tensor of rank `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize, ImportError> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(self.err(format!("axis {axis} out of range for rank {rank}")));
        }
        Ok(a as usize)
    }

    /// Normalises a list of axes; sorted and deduplicated.
    pub fn axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>, ImportError> {
        let mut v = axes
            .iter()
            .map(|&a| self.axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_unstable();
        if v.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.err(format!("repeated axis in {axes:?}")));
        }
        Ok(v)
    }
}
