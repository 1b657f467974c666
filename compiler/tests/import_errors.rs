//! Every import error case: each must fail, with a one-line message naming the culprit.
mod import_util;

use import_util::*;
use tessera_compiler::onnx::{import_bytes, import_model, parse_shape_spec, ImportError};

/// x[batch, 3] · W[3, 4] + b, softmax.
fn small_model() -> ModelBuilder {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::S("batch"), D::N(3)])
        .init_f32_raw("W", &[3, 4], &[0.5; 12])
        .init_f32_raw("b", &[4], &[0.1; 4])
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .node("Add", &["h", "b"], &["y"], vec![])
        .output("y");
    b
}

/// The error importing the model `b` built, as if read from `file`, with no input shapes.
fn import_error(b: &ModelBuilder, file: &str) -> ImportError {
    import_bytes(&b.bytes(), file, &opts("")).unwrap_err()
}

fn one_line(e: &ImportError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error is not one line: {s}");
    s
}

#[test]
fn the_small_model_imports() {
    let m = import_bytes(&small_model().bytes(), "small.onnx", &opts("x=2x3")).unwrap();
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![2, 4]);
}

#[test]
fn truncated_file_is_a_parse_error_naming_the_file() {
    let bytes = small_model().bytes();
    for cut in [bytes.len() / 2, bytes.len() - 3, 1] {
        let e = import_bytes(&bytes[..cut], "cut.onnx", &opts("x=2x3")).unwrap_err();
        let s = one_line(&e);
        assert!(matches!(e, ImportError::Parse { .. }), "cut at {cut}: {s}");
        assert!(s.contains("cut.onnx"), "{s}");
    }
}

#[test]
fn truncated_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunc.onnx");
    let bytes = small_model().bytes();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let s = one_line(&import_model(&path, &opts("x=2x3")).unwrap_err());
    assert_mentions(&s, &["trunc.onnx", "not a valid ONNX model"]);
    let missing = dir.path().join("missing.onnx");
    let s = one_line(&import_model(&missing, &opts("")).unwrap_err());
    assert_mentions(&s, &["missing.onnx", "cannot read"]);
}

#[test]
fn random_bytes_are_not_onnx() {
    // A fixed pseudo-random byte stream (xorshift), so the test is deterministic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let e = import_bytes(&bytes, "noise.bin", &opts("")).unwrap_err();
    let s = one_line(&e);
    assert!(
        matches!(e, ImportError::Parse { .. }) && s.contains("noise.bin"),
        "{s}"
    );
    let e = import_bytes(b"hello, this is text", "hello.txt", &opts("")).unwrap_err();
    assert!(matches!(e, ImportError::Parse { .. }), "{e}");
    let e = import_bytes(b"", "empty.onnx", &opts("")).unwrap_err();
    assert!(one_line(&e).contains("empty"), "{e}");
}

#[test]
fn missing_shape_for_dynamic_dim() {
    let e = import_bytes(&small_model().bytes(), "m.onnx", &opts("")).unwrap_err();
    let s = one_line(&e);
    assert!(matches!(e, ImportError::DynamicDim { dim: 0, .. }), "{s}");
    assert_mentions(&s, &["'x'", "batch", "--shape x="]);
}

#[test]
fn wrong_rank_and_wrong_fixed_dim() {
    let e = import_bytes(&small_model().bytes(), "m.onnx", &opts("x=2x3x1")).unwrap_err();
    let s = one_line(&e);
    assert!(matches!(e, ImportError::InputShapeMismatch { .. }), "{s}");
    assert_mentions(&s, &["[2, 3, 1]", "[batch, 3]", "rank 3 vs 2"]);
    let e = import_bytes(&small_model().bytes(), "m.onnx", &opts("x=2x5")).unwrap_err();
    let s = one_line(&e);
    assert_mentions(&s, &["dim 1 is fixed to 3", "[2, 5]"]);
}

#[test]
fn unknown_input_name() {
    let e = import_bytes(
        &small_model().bytes(),
        "m.onnx",
        &opts("x=2x3,token_type_ids=1x128"),
    )
    .unwrap_err();
    let s = one_line(&e);
    assert!(matches!(e, ImportError::UnknownInput { .. }), "{s}");
    assert_mentions(&s, &["token_type_ids", "inputs: x"]);
}

#[test]
fn all_unsupported_ops_in_one_error() {
    let mut b = ModelBuilder::new(17);
    b.opset("com.microsoft", 1)
        .input("x", FLOAT, &[D::N(2)])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Det", &["a"], &["b"], vec![])
        .node_in("com.microsoft", "FusedGemm", &["b", "b"], &["c"], vec![])
        .node("Relu", &["c"], &["y"], vec![])
        .output("y");
    let e = import_error(&b, "u.onnx");
    let s = one_line(&e);
    let ImportError::Unsupported { ops, .. } = &e else {
        panic!("expected Unsupported, got {s}")
    };
    assert_eq!(ops.len(), 2, "{s}");
    assert_eq!(
        (ops[0].op_type.as_str(), ops[0].opset, ops[0].node.as_str()),
        ("Det", 17, "Det_1")
    );
    assert_eq!(
        (ops[1].domain.as_str(), ops[1].op_type.as_str()),
        ("com.microsoft", "FusedGemm")
    );
    assert_mentions(&s, &["2 unsupported op(s)", "Det", "com.microsoft v1"]);
}

#[test]
fn old_opset_is_unsupported() {
    let mut b = ModelBuilder::new(11);
    b.input("x", FLOAT, &[D::N(2)])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let s = one_line(&import_error(&b, "old.onnx"));
    assert!(s.contains("Relu (ai.onnx v11"), "{s}");
}

#[test]
fn matmul_shape_mismatch_names_node_and_shapes() {
    let mut b = ModelBuilder::new(17);
    b.input("a", FLOAT, &[D::N(2), D::N(3)])
        .input("b", FLOAT, &[D::N(4), D::N(5)])
        .node("MatMul", &["a", "b"], &["y"], vec![])
        .output("y");
    let e = import_error(&b, "mm.onnx");
    let s = one_line(&e);
    assert!(matches!(e, ImportError::Node { .. }), "{s}");
    assert_mentions(&s, &["MatMul_0", "(MatMul)", "[2, 3]", "[4, 5]"]);
}

#[test]
fn range_of_runtime_values() {
    let mut b = ModelBuilder::new(17);
    b.input("n", INT64, &[])
        .const_i64("zero", &[], &[0])
        .const_i64("one", &[], &[1])
        .node("Range", &["zero", "n", "one"], &["r"], vec![])
        .output("r");
    let s = one_line(&import_error(&b, "r.onnx"));
    assert_eq!(
        s,
        "node 'Range_2' (Range): input 1 ('n') must be a constant but depends on runtime values"
    );
}

#[test]
fn reshape_target_from_runtime_values() {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(6)])
        .input("s", INT64, &[D::N(2)])
        .node("Reshape", &["x", "s"], &["y"], vec![])
        .output("y");
    let s = one_line(&import_error(&b, "r.onnx"));
    assert_mentions(&s, &["(Reshape)", "'s'", "runtime values"]);
}

#[test]
fn shape_spec_errors() {
    assert_eq!(parse_shape_spec("a=1x128, b=2").unwrap()["b"], vec![2]);
    assert_eq!(parse_shape_spec("s=").unwrap()["s"], Vec::<usize>::new());
    for bad in ["a", "a=1xq", "a=1,a=2", "=3", ""] {
        let e = parse_shape_spec(bad).unwrap_err();
        assert!(matches!(e, ImportError::ShapeSpec { .. }), "{bad}: {e}");
    }
}

#[test]
fn unsupported_optional_output_is_reported_when_used() {
    // LayerNormalization's Mean is supported: the reader gets its [2, 1] shape.
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(4)])
        .init_f32_raw("g", &[4], &[1.0; 4])
        .node("LayerNormalization", &["x", "g"], &["y", "mean"], vec![])
        .node("Relu", &["mean"], &["z"], vec![])
        .output("z");
    let m = import_bytes(&b.bytes(), "ln.onnx", &opts("")).unwrap();
    let z = m.graph.tensor_by_name("z").unwrap();
    assert_eq!(m.graph.tensor(z).shape, vec![2, 1]);
    // An output the op does not have (Relu has one) cannot be read.
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2)])
        .node("Relu", &["x"], &["y", "extra"], vec![])
        .node("Neg", &["extra"], &["z"], vec![])
        .output("z");
    let s = one_line(&import_error(&b, "r.onnx"));
    assert_mentions(&s, &["Neg_1", "'extra'", "output 1"]);
}

#[test]
fn range_count_beyond_a_tensor_and_zero_delta() {
    let range = |lo: i64, hi: i64, delta: i64| {
        let mut b = ModelBuilder::new(17);
        b.input("x", FLOAT, &[D::N(1)])
            .const_i64("lo", &[], &[lo])
            .const_i64("hi", &[], &[hi])
            .const_i64("delta", &[], &[delta])
            .node("Range", &["lo", "hi", "delta"], &["r"], vec![])
            .output("r");
        one_line(&import_error(&b, "r.onnx"))
    };
    assert_mentions(
        &range(i64::MIN, i64::MAX, 1),
        &[
            "(Range)",
            "start -9223372036854775808, limit 9223372036854775807, delta 1 gives \
             18446744073709551615 elements, more than a tensor can hold",
        ],
    );
    assert_mentions(
        &range(0, 4, 0),
        &["(Range)", "delta is 0 (start 0, limit 4, delta 0)"],
    );
}

/// Vision ops with inconsistent shapes or attributes: one-line errors naming node and op.
#[test]
fn vision_op_errors_name_the_node() {
    let conv = |w: &[i64], attrs: Vec<onnx_protobuf::AttributeProto>| {
        let mut b = ModelBuilder::new(18);
        let n: i64 = w.iter().product();
        b.input("x", FLOAT, &[D::N(1), D::N(4), D::N(5), D::N(5)])
            .init_f32_raw("w", w, &vec![0.5; n as usize])
            .node("Conv", &["x", "w"], &["y"], attrs)
            .output("y");
        one_line(&import_error(&b, "conv.onnx"))
    };
    let s = conv(&[2, 2, 3, 3], vec![attr_int("group", 3)]);
    assert_mentions(&s, &["Conv", "group 3"]);
    let s = conv(&[2, 4, 7, 7], vec![]);
    assert_mentions(&s, &["Conv", "does not fit input"]);
    let s = conv(&[2, 4, 3, 3], vec![attr_ints("strides", &[1])]);
    assert_mentions(&s, &["Conv", "strides"]);
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(1), D::N(4), D::N(5), D::N(5)])
        .node(
            "MaxPool",
            &["x"],
            &["y", "i"],
            vec![attr_ints("kernel_shape", &[2, 2])],
        )
        .output("y")
        .output("i");
    let s = one_line(&import_error(&b, "pool.onnx"));
    assert_mentions(&s, &["MaxPool", "Indices"]);
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(1), D::N(4), D::N(5), D::N(5)])
        .init_f32_raw("s", &[4], &[1.0; 4])
        .node(
            "BatchNormalization",
            &["x", "s", "s", "s", "s"],
            &["y"],
            vec![attr_int("training_mode", 1)],
        )
        .output("y");
    let s = one_line(&import_error(&b, "bn.onnx"));
    assert_mentions(&s, &["BatchNormalization", "training_mode"]);
}

/// ONNX names each value once (the graph is in SSA form; onnxruntime refuses a second
/// definition). Found by scripts/campaign.py: a second node writing `t` was accepted and
/// silently replaced the first node's value for every later reader.
#[test]
fn a_value_defined_twice_is_an_error_naming_it() {
    let x = [D::N(4)];
    let mut twice = ModelBuilder::new(17);
    twice
        .input("x", FLOAT, &x)
        .node("Relu", &["x"], &["t"], vec![])
        .node("Neg", &["x"], &["t"], vec![])
        .node("Abs", &["t"], &["y"], vec![])
        .output("y");
    let s = one_line(&import_error(&twice, "m.onnx"));
    assert_mentions(&s, &["'Neg_1'", "output 't' is already defined"]);

    let mut over_input = ModelBuilder::new(17);
    over_input
        .input("x", FLOAT, &x)
        .node("Relu", &["x"], &["x"], vec![])
        .output("x");
    let s = one_line(&import_error(&over_input, "m.onnx"));
    assert_mentions(&s, &["'Relu_0'", "output 'x' is already defined"]);

    let mut two_inits = ModelBuilder::new(17);
    two_inits
        .input("x", FLOAT, &x)
        .init_f32_raw("w", &[4], &[1.0; 4])
        .init_f32_raw("w", &[4], &[5.0; 4])
        .node("Add", &["x", "w"], &["y"], vec![])
        .output("y");
    let s = one_line(&import_error(&two_inits, "m.onnx"));
    assert_mentions(&s, &["'w'", "two initializers"]);

    let mut two_inputs = ModelBuilder::new(17);
    two_inputs
        .input("x", FLOAT, &x)
        .input("x", FLOAT, &[D::N(3)])
        .node("Add", &["x", "x"], &["y"], vec![])
        .output("y");
    let s = one_line(&import_error(&two_inputs, "m.onnx"));
    assert_mentions(&s, &["'x'", "two graph inputs"]);
}

#[test]
fn a_cast_to_a_type_tessera_does_not_hold_names_the_type() {
    // A traced Falcon with ALiBi casts to complex128 (onnxruntime rejects the model too).
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2)])
        .node("Cast", &["x"], &["y"], vec![attr_int("to", 15)])
        .output("y");
    let e = import_error(&b, "cast.onnx");
    let s = one_line(&e);
    assert_mentions(&s, &["Cast_0", "(Cast)", "COMPLEX128", "15"]);
}
