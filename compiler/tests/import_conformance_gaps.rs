//! Optional outputs (LayerNormalization Mean/InvStdDev, Dropout mask), integer Clip,
//! training-mode Dropout and the per-op opset ranges above 23.
mod import_util;

use import_util::*;
use onnx_protobuf::TensorProto;
use tessera_compiler::onnx::{import_bytes, ImportError, ImportOptions, ImportedModel};
use tessera_ir::op::{ClipAttrs, UnaryOp};
use tessera_ir::{DType, Op, WeightData};

fn import(b: &ModelBuilder) -> Result<ImportedModel, ImportError> {
    import_bytes(&b.bytes(), "t.onnx", &ImportOptions::default())
}

fn bool_init(name: &str, v: bool) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = BOOL;
    t.int32_data = vec![v as i32];
    t
}

fn layer_norm_model(outputs: &[&str], graph_outputs: &[&str]) -> ModelBuilder {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(3), D::N(4)])
        .init_f32_raw("s", &[3, 4], &[1.0; 12])
        .node(
            "LayerNormalization",
            &["x", "s"],
            outputs,
            vec![attr_int("axis", 1)],
        );
    for o in graph_outputs {
        b.output(o);
    }
    b
}

#[test]
fn layer_norm_binds_mean_and_inv_std_dev_only_when_used() {
    let m = import(&layer_norm_model(
        &["y", "mean", "inv"],
        &["y", "mean", "inv"],
    ))
    .unwrap();
    let node = &m.graph.nodes[0];
    assert!(matches!(node.op, Op::LayerNorm(_)));
    let types: Vec<_> = node
        .outputs
        .iter()
        .map(|&t| (m.graph.tensor(t).dtype, m.graph.tensor(t).shape.clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            (DType::F32, vec![2, 3, 4]),
            (DType::F32, vec![2, 1, 1]),
            (DType::F32, vec![2, 1, 1])
        ]
    );
    // Named but unread statistics, and omitted ones, give a 1-output node.
    for outs in [&["y", "mean", "inv"][..], &["y", "", ""], &["y"]] {
        let m = import(&layer_norm_model(outs, &["y"])).unwrap();
        assert_eq!(m.graph.nodes.len(), 1);
        assert_eq!(m.graph.nodes[0].outputs.len(), 1, "outputs {outs:?}");
    }
}

fn dropout_model(training: Option<bool>, ratio: Option<f32>, mask: bool) -> ModelBuilder {
    let mut b = ModelBuilder::new(22);
    b.input("x", FLOAT, &[D::N(2), D::N(3)]);
    let mut inputs = vec!["x", "", ""];
    if let Some(r) = ratio {
        b.init_f32_raw("r", &[], &[r]);
        inputs[1] = "r";
    }
    if let Some(t) = training {
        b.initializer(bool_init("t", t));
        inputs[2] = "t";
    }
    while inputs.last() == Some(&"") {
        inputs.pop();
    }
    let outs: &[&str] = if mask { &["y", "z"] } else { &["y"] };
    b.node("Dropout", &inputs, outs, vec![]).output("y");
    if mask {
        b.output("z");
    }
    b
}

#[test]
fn dropout_mask_is_a_constant_all_true_tensor() {
    let m = import(&dropout_model(None, Some(0.3), true)).unwrap();
    let g = &m.graph;
    let z = g.outputs[1];
    let w = g.weights.get(&z).expect("the mask is folded into a weight");
    match &w.data {
        WeightData::Inline { tensor } => {
            assert_eq!(tensor.dtype, DType::Bool);
            assert_eq!(tensor.shape, vec![2, 3]);
            assert_eq!(tensor.as_bool().unwrap(), &[true; 6]);
        }
        other => panic!("mask should be inline, got {other:?}"),
    }
    assert_eq!(g.nodes.len(), 1);
    assert!(matches!(&g.nodes[0].op, Op::Unary(u) if u.kind == UnaryOp::Identity));
    // Training mode with ratio 0 keeps everything: still identity.
    assert!(import(&dropout_model(Some(true), Some(0.0), true)).is_ok());
    assert!(import(&dropout_model(Some(false), Some(0.5), false)).is_ok());
}

#[test]
fn training_mode_dropout_is_an_unsupported_feature() {
    for ratio in [Some(0.5), None] {
        let e = import(&dropout_model(Some(true), ratio, false)).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, ImportError::UnsupportedFeature { .. }), "{s}");
        assert!(
            s.contains("Dropout_0")
                && s.contains("Dropout in training mode is not supported (inference only)"),
            "{s}"
        );
    }
    // A runtime training flag must be a constant.
    let mut b = ModelBuilder::new(22);
    b.input("x", FLOAT, &[D::N(2)])
        .input("t", BOOL, &[])
        .node("Dropout", &["x", "", "t"], &["y"], vec![])
        .output("y");
    let s = import(&b).unwrap_err().to_string();
    assert!(
        s.contains("input 2 ('t') must be a constant") && s.contains("training mode"),
        "{s}"
    );
}

#[test]
fn integer_clip_imports_and_rejects_inexact_bounds() {
    let clip = |lo: i64| {
        let mut b = ModelBuilder::new(13);
        b.input("x", INT64, &[D::N(4)])
            .init_i64("lo", &[], &[lo])
            .node("Clip", &["x", "lo"], &["y"], vec![])
            .output("y");
        import(&b)
    };
    let m = clip(-3).unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::Clip(ClipAttrs {
            min: Some(-3.0),
            max: None
        })
    );
    let s = clip((1 << 24) + 1).unwrap_err().to_string();
    assert!(s.contains("16777217") && s.contains("2^24"), "{s}");
}

#[test]
fn opsets_above_23_are_accepted_up_to_28() {
    let relu = |opset: i64| {
        let mut b = ModelBuilder::new(opset);
        b.input("x", FLOAT, &[D::N(2)])
            .node("Relu", &["x"], &["y"], vec![])
            .output("y");
        import(&b)
    };
    for opset in [13, 23, 24, 28] {
        assert!(relu(opset).is_ok(), "opset {opset}");
    }
    let s = relu(29).unwrap_err().to_string();
    assert!(s.contains("Relu (ai.onnx v29"), "{s}");
}
