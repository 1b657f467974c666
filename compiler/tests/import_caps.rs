//! Sizes that overflow or exceed the per-tensor cap (`tessera_ir::MAX_TENSOR_BYTES`) are
//! one-line import errors naming the node or tensor and the shape, found before anything
//! of that size is allocated (these tests must stay fast and small).
mod import_util;

use import_util::*;
use tessera_compiler::onnx::import_bytes;
use tessera_ir::Op;

/// The one-line error importing `b` with input shapes `spec`.
fn error(b: &ModelBuilder, spec: &str) -> String {
    let s = import_bytes(&b.bytes(), "caps.onnx", &opts(spec))
        .expect_err("import should fail")
        .to_string();
    assert!(!s.contains('\n'), "error is not one line: {s}");
    s
}

/// Asserts that importing `b` with input shapes `spec` fails with exactly `expected`.
fn assert_error(b: &ModelBuilder, spec: &str, expected: &str) {
    assert_eq!(error(b, spec), expected);
}

fn constant_of_shape(dims: &[i64]) -> ModelBuilder {
    let mut b = ModelBuilder::new(17);
    b.const_i64("s", &[dims.len() as i64], dims)
        .node("ConstantOfShape", &["s"], &["y"], vec![])
        .output("y");
    b
}

#[test]
fn constant_of_shape_over_the_cap() {
    let s = error(&constant_of_shape(&[1 << 20, 1 << 20]), "");
    assert_mentions(
        &s,
        &[
            "node 'ConstantOfShape_1' (ConstantOfShape)",
            "shape [1048576, 1048576] of f32 is 4398046511104 bytes, over the cap",
        ],
    );
    let s = error(&constant_of_shape(&[1 << 62, 1 << 62]), "");
    assert_mentions(&s, &["ConstantOfShape_1", "overflows the element count"]);
}

#[test]
fn large_constant_of_shape_is_an_expand_not_a_folded_constant() {
    let m = import_bytes(&constant_of_shape(&[100, 100]).bytes(), "c.onnx", &opts("")).unwrap();
    let out = m.graph.outputs[0];
    assert_eq!(m.graph.tensor(out).shape, vec![100, 100]);
    assert!(
        m.graph.nodes.iter().any(|n| matches!(n.op, Op::Expand(_))),
        "expected an Expand node"
    );
}

fn range_i64(start: i64, limit: i64, delta: i64) -> ModelBuilder {
    let mut b = ModelBuilder::new(17);
    b.const_i64("a", &[], &[start])
        .const_i64("l", &[], &[limit])
        .const_i64("d", &[], &[delta])
        .node("Range", &["a", "l", "d"], &["r"], vec![])
        .output("r");
    b
}

#[test]
fn range_over_the_cap_or_overflowing() {
    let s = error(&range_i64(0, 1_000_000_000_000, 1), "");
    assert_mentions(
        &s,
        &[
            "node 'Range_3' (Range)",
            "shape [1000000000000] of i64 is 8000000000000 bytes, over the cap",
        ],
    );
    let s = error(&range_i64(i64::MIN, i64::MAX, 1), "");
    assert_mentions(&s, &["Range_3", "more than a tensor can hold"]);
    let s = error(&range_i64(i64::MAX, i64::MIN, -(1 << 30)), "");
    assert_mentions(
        &s,
        &["Range_3", "[17179869184] of i64 is 137438953472 bytes"],
    );
    // Small ranges still fold, with exact integer arithmetic.
    let m = import_bytes(&range_i64(10, 1, -3).bytes(), "r.onnx", &opts("")).unwrap();
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![3]);
}

#[test]
fn split_with_a_huge_num_outputs() {
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(4)])
        .node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![attr_int("num_outputs", 1 << 31)],
        )
        .output("a");
    let expected =
        "node 'Split_0' (Split): num_outputs 2147483648 does not match the node's 2 outputs";
    assert_error(&b, "", expected);
}

#[test]
fn expand_over_the_cap() {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(1)])
        .const_i64("s", &[1], &[1 << 53])
        .node("Expand", &["x", "s"], &["y"], vec![])
        .output("y");
    let s = error(&b, "");
    assert_mentions(
        &s,
        &[
            "node 'Expand_1' (Expand)",
            "shape [9007199254740992] of f32",
            "over the cap",
        ],
    );
}

fn one_input() -> ModelBuilder {
    let mut b = ModelBuilder::new(17);
    b.input("input_ids", FLOAT, &[D::S("b"), D::S("s")])
        .node("Relu", &["input_ids"], &["y"], vec![])
        .output("y");
    b
}

#[test]
fn shape_flag_over_the_cap_or_overflowing() {
    assert_error(
        &one_input(),
        "input_ids=1x99999999999",
        "tensor 'input_ids': --shape graph input: shape [1, 99999999999] of f32 is \
         399999999996 bytes, over the cap of 17179869184 bytes (16 GiB) per tensor",
    );
    let s = error(
        &one_input(),
        "input_ids=4611686018427387904x4611686018427387904",
    );
    assert_mentions(&s, &["tensor 'input_ids'", "overflows the element count"]);
}

#[test]
fn graph_with_no_nodes_whose_output_is_an_initializer() {
    let mut b = ModelBuilder::new(17);
    b.init_f32_raw("w", &[2], &[1.0, 2.0]).output("w");
    let m = import_bytes(&b.bytes(), "w.onnx", &opts(""));
    match m {
        Ok(m) => assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![2]),
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
}

/// Found by the `onnx_import` fuzz target: an initializer whose dims overflow a usize when
/// multiplied (by each other or by the element size) panicked computing its byte length.
#[test]
fn initializer_dims_that_overflow_or_exceed_the_cap() {
    for (dims, raw) in [
        (vec![1i64 << 62, 8], true),
        (vec![1 << 31, 1 << 31], true),
        (vec![1 << 40, 1 << 20], false),
    ] {
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = "W".into();
        t.data_type = FLOAT;
        t.dims = dims.clone();
        if raw {
            t.raw_data = vec![0; 16];
        } else {
            t.float_data = vec![0.0; 4];
        }
        let mut b = ModelBuilder::new(17);
        b.input("x", FLOAT, &[D::N(2)])
            .initializer(t)
            .node("Add", &["x", "W"], &["y"], vec![])
            .output("y");
        let s = error(&b, "");
        assert!(s.starts_with("tensor 'W': "), "{dims:?}: {s}");
    }
}
