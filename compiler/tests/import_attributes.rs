//! Strict node checking (issue 13): attributes of the wrong type, unknown or repeated
//! attributes, missing required attributes and inputs of another opset's form are errors
//! naming the node, op and attribute, as in the ONNX checker and onnxruntime.
mod import_util;

use import_util::*;
use onnx_protobuf::AttributeProto;
use tessera_compiler::onnx::import_bytes;

/// x[2, 3] → `op` (with `attrs`, on `inputs` after x) → y, at `opset`; int64 constants
/// `c1`, `c2` are available as extra inputs.
fn one_node(opset: i64, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> Vec<u8> {
    let mut b = ModelBuilder::new(opset);
    b.input("x", FLOAT, &[D::N(2), D::N(3)])
        .const_i64("c1", &[1], &[1])
        .const_i64("c2", &[1], &[0]);
    let mut ins = vec!["x"];
    ins.extend_from_slice(inputs);
    b.node(op, &ins, &["y"], attrs).output("y");
    b.bytes()
}

/// The one-line import error of `bytes`.
fn error(bytes: &[u8]) -> String {
    let e = import_bytes(bytes, "m.onnx", &opts(""))
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn well_typed_attributes_import() {
    let ok = one_node(17, "Softmax", &[], vec![attr_int("axis", 1)]);
    import_bytes(&ok, "m.onnx", &opts("")).unwrap();
    let ok = one_node(13, "ReduceMean", &[], vec![attr_ints("axes", &[1])]);
    import_bytes(&ok, "m.onnx", &opts("")).unwrap();
    let ok = one_node(18, "ReduceMean", &["c1"], vec![attr_int("keepdims", 0)]);
    import_bytes(&ok, "m.onnx", &opts("")).unwrap();
}

#[test]
fn an_attribute_of_the_wrong_type_is_refused_naming_node_op_and_attribute() {
    let e = error(&one_node(17, "Softmax", &[], vec![attr_ints("axis", &[1])]));
    assert_mentions(
        &e,
        &["Softmax_2", "(Softmax)", "'axis'", "INTS", "expects INT"],
    );
    let e = error(&one_node(17, "Gemm", &["x"], vec![attr_int("alpha", 2)]));
    assert_mentions(&e, &["(Gemm)", "'alpha'", "type INT", "expects FLOAT"]);
    let e = error(&one_node(
        13,
        "Transpose",
        &[],
        vec![attr_str("perm", "1,0")],
    ));
    assert_mentions(&e, &["(Transpose)", "'perm'", "STRING", "expects INTS"]);
}

#[test]
fn an_attribute_without_a_type_is_refused() {
    let mut a = attr_int("axis", 1);
    a.type_ = onnx_protobuf::attribute_proto::AttributeType::UNDEFINED.into();
    let e = error(&one_node(17, "Softmax", &[], vec![a]));
    assert_mentions(&e, &["(Softmax)", "'axis'", "no type", "expects INT"]);
}

#[test]
fn an_unknown_attribute_is_refused_listing_the_known_ones() {
    let e = error(&one_node(17, "Softmax", &[], vec![attr_int("axes", 1)]));
    assert_mentions(&e, &["Softmax_2", "unknown attribute 'axes'", "has: axis"]);
    let e = error(&one_node(17, "Relu", &[], vec![attr_float("alpha", 0.1)]));
    assert_mentions(&e, &["(Relu)", "unknown attribute 'alpha'", "has: none"]);
    // `axes` stopped being an attribute of ReduceMean at opset 18.
    let e = error(&one_node(
        18,
        "ReduceMean",
        &[],
        vec![attr_ints("axes", &[1])],
    ));
    assert_mentions(
        &e,
        &["(ReduceMean)", "unknown attribute 'axes'", "opset 18"],
    );
}

#[test]
fn a_repeated_attribute_is_refused() {
    let attrs = vec![attr_int("axis", 1), attr_int("axis", 0)];
    let e = error(&one_node(17, "Softmax", &[], attrs));
    assert_mentions(&e, &["(Softmax)", "'axis' is given twice"]);
}

#[test]
fn a_missing_required_attribute_is_refused() {
    let e = error(&one_node(17, "Cast", &[], vec![]));
    assert_mentions(&e, &["(Cast)", "required attribute 'to'", "missing"]);
}

#[test]
fn an_input_form_of_a_later_opset_is_refused() {
    // ReduceMean takes `axes` as an input only from opset 18: at 17 it has one input.
    let e = error(&one_node(17, "ReduceMean", &["c1"], vec![]));
    assert_mentions(&e, &["(ReduceMean)", "2 input(s)", "opset 17", "takes 1"]);
    let e = error(&one_node(17, "Add", &["x", "x"], vec![]));
    assert_mentions(&e, &["(Add)", "3 input(s)", "takes 2"]);
}
