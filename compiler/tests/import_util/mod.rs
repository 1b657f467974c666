//! Builds small ONNX models in memory with the onnx-protobuf types, for the import tests.
#![allow(dead_code)]
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX element type codes.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;

/// A declared input dim.
pub enum D {
    /// Fixed extent.
    N(i64),
    /// Symbolic name.
    S(&'static str),
}

pub struct ModelBuilder {
    pub model: ModelProto,
    graph: GraphProto,
}

fn value_info(name: &str, elem: i32, dims: Option<&[D]>) -> ValueInfoProto {
    let mut tt = TypeTensor::new();
    tt.elem_type = elem;
    if let Some(dims) = dims {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = Dimension::new();
            dim.value = Some(match d {
                D::N(v) => dimension::Value::DimValue(*v),
                D::S(s) => dimension::Value::DimParam(s.to_string()),
            });
            shape.dim.push(dim);
        }
        tt.shape = Some(shape).into();
    }
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(tp).into();
    vi
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        let mut model = ModelProto::new();
        model.ir_version = 8;
        model.producer_name = "tessera-tests".into();
        let mut o = OperatorSetIdProto::new();
        o.domain = String::new();
        o.version = opset;
        model.opset_import.push(o);
        ModelBuilder {
            model,
            graph: GraphProto::new(),
        }
    }

    pub fn opset(&mut self, domain: &str, version: i64) -> &mut Self {
        let mut o = OperatorSetIdProto::new();
        o.domain = domain.into();
        o.version = version;
        self.model.opset_import.push(o);
        self
    }

    pub fn input(&mut self, name: &str, elem: i32, dims: &[D]) -> &mut Self {
        self.graph.input.push(value_info(name, elem, Some(dims)));
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(value_info(name, 0, None));
        self
    }

    /// An f32 initializer stored as raw_data.
    pub fn init_f32_raw(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.data_type = FLOAT;
        t.dims = dims.to_vec();
        t.raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.graph.initializer.push(t);
        self
    }

    /// An i64 initializer stored in int64_data.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        self.graph.initializer.push(tensor_i64(name, dims, data));
        self
    }

    pub fn initializer(&mut self, t: TensorProto) -> &mut Self {
        self.graph.initializer.push(t);
        self
    }

    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        self.node_in("", op, inputs, outputs, attrs)
    }

    /// A Gather of `indices` from `data` along `axis`, into `out`.
    pub fn gather(&mut self, data: &str, indices: &str, out: &str, axis: i64) -> &mut Self {
        self.node(
            "Gather",
            &[data, indices],
            &[out],
            vec![attr_int("axis", axis)],
        )
    }

    pub fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        let mut n = NodeProto::new();
        n.name = format!("{op}_{}", self.graph.node.len());
        n.op_type = op.into();
        n.domain = domain.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        n.attribute = attrs;
        self.graph.node.push(n);
        self
    }

    /// A Constant node holding an i64 tensor.
    pub fn const_i64(&mut self, out: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        self.node(
            "Constant",
            &[],
            &[out],
            vec![attr_tensor("value", tensor_i64("", dims, data))],
        )
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut m = self.model.clone();
        m.graph = Some(self.graph.clone()).into();
        m.write_to_bytes().expect("serialise model")
    }
}

pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = INT64;
    t.dims = dims.to_vec();
    t.int64_data = data.to_vec();
    t
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = ty.into();
    a
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = attr(name, AttributeType::INT);
    a.i = v;
    a
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = attr(name, AttributeType::INTS);
    a.ints = v.to_vec();
    a
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOAT);
    a.f = v;
    a
}

pub fn attr_str(name: &str, v: &str) -> AttributeProto {
    let mut a = attr(name, AttributeType::STRING);
    a.s = v.as_bytes().to_vec();
    a
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    let mut a = attr(name, AttributeType::TENSOR);
    a.t = Some(t).into();
    a
}

/// Import options with the input shapes `spec` (`NAME=AxB,...`); none when empty. The
/// import tests check the import phases, so canonicalisation is off (tests/zoo.rs,
/// compiler/tests/import_minilm.rs and the canon module's tests test it).
pub fn opts(spec: &str) -> tessera_compiler::onnx::ImportOptions {
    tessera_compiler::onnx::ImportOptions {
        canon: tessera_compiler::onnx::CanonConfig {
            enabled: false,
            ..Default::default()
        },
        input_shapes: if spec.is_empty() {
            std::collections::BTreeMap::new()
        } else {
            tessera_compiler::onnx::parse_shape_spec(spec).unwrap()
        },
    }
}

/// Asserts that the message `s` mentions every one of `parts`.
pub fn assert_mentions(s: &str, parts: &[&str]) {
    for part in parts {
        assert!(s.contains(part), "{part:?} not in: {s}");
    }
}

/// Imports the model (canonicalisation off); the error as its one line of text (asserted
/// to be one line).
pub fn import(b: &ModelBuilder) -> Result<tessera_compiler::onnx::ImportedModel, String> {
    tessera_compiler::onnx::import_bytes(&b.bytes(), "m.onnx", &opts("")).map_err(|e| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "error is not one line: {s}");
        s
    })
}

/// The op names of an imported graph, in node order.
pub fn ops(m: &tessera_compiler::onnx::ImportedModel) -> Vec<String> {
    m.graph.nodes.iter().map(|n| n.op.name()).collect()
}
