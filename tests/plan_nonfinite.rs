//! NaN and ±infinity constants round-trip through the plan (issue 13): compile a model
//! holding them, read the plan back, run it and get them in the outputs. (They used to be
//! written as JSON `null`, and the plan could not be loaded.)
mod common;

use common::tessera;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;
use std::collections::BTreeMap;
use std::path::Path;
use tessera_ir::plan::Plan;
use tessera_ir::{Tensor, TensorData};
use tessera_runtime::exec::{load::open_plan, run_plan, RunOptions};

const FLOAT: i32 = 1;

/// A float value of shape `dims`.
fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut shape = onnx_protobuf::TensorShapeProto::new();
    for &d in dims {
        let mut dim = Dimension::new();
        dim.value = Some(dimension::Value::DimValue(d));
        shape.dim.push(dim);
    }
    let mut t = TensorType::new();
    t.elem_type = FLOAT;
    t.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

/// A float initializer in typed fields (kept inline in the plan).
fn constant(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = FLOAT;
    t.dims = dims.to_vec();
    t.float_data = data.to_vec();
    t
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = format!("{op}_node");
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output.push(output.into());
    n
}

/// y = Clip(x + c, lo, hi) with c = [NaN, inf, -inf, 1], lo = -inf, hi = inf; x is [2, 4].
fn write_model(path: &Path) {
    let mut g = GraphProto::new();
    g.name = "nonfinite".into();
    g.input.push(value("x", &[2, 4]));
    g.output.push(value("y", &[2, 4]));
    let c = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0];
    g.initializer.push(constant("c", &[4], &c));
    g.initializer
        .push(constant("lo", &[], &[f32::NEG_INFINITY]));
    g.initializer.push(constant("hi", &[], &[f32::INFINITY]));
    g.node.push(node("Add", &["x", "c"], "s"));
    g.node.push(node("Clip", &["s", "lo", "hi"], "y"));
    let mut opset = OperatorSetIdProto::new();
    opset.version = 17;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    std::fs::write(path, m.write_to_bytes().expect("encode model")).expect("write model");
}

#[test]
fn nan_and_infinite_constants_survive_compile_save_load_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nonfinite.onnx");
    write_model(&model);
    let plan_path = dir.path().join("plan.json");
    let (code, _, err) = tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--devices",
        "2",
        "-o",
        plan_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "compile failed: {err}");
    let text = std::fs::read_to_string(&plan_path).unwrap();
    for s in ["\"NaN\"", "\"inf\"", "\"-inf\""] {
        assert!(text.contains(s), "{s} missing from the plan");
    }

    let plan = Plan::read(&plan_path).unwrap_or_else(|e| panic!("{e}"));
    let inline: Vec<f32> = plan
        .graph
        .weights
        .values()
        .filter_map(|w| match &w.data {
            tessera_ir::WeightData::Inline { tensor } => match &tensor.data {
                TensorData::F32(v) if v.len() == 4 => Some(v.clone()),
                _ => None,
            },
            _ => None,
        })
        .next()
        .expect("the inline constant c");
    assert!(inline[0].is_nan());
    assert_eq!(inline[1..], [f32::INFINITY, f32::NEG_INFINITY, 1.0]);

    let loaded = open_plan(&plan_path, None).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::f32(vec![2, 4], vec![0.5; 8]);
    let inputs = BTreeMap::from([("x".to_string(), x)]);
    let (outs, _) = run_plan(&loaded.plan, &loaded.store, &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let TensorData::F32(y) = &outs[0].data else {
        panic!("not f32: {:?}", outs[0])
    };
    for row in y.chunks(4) {
        assert!(row[0].is_nan(), "{y:?}");
        assert_eq!(row[1..], [f32::INFINITY, f32::NEG_INFINITY, 1.5], "{y:?}");
    }
}
