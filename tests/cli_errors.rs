//! Bad input to the `tessera` binary: one-line errors naming the culprit, non-zero exit,
//! never a panic.
mod common;

use common::tessera;
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use protobuf::Message;
use std::path::{Path, PathBuf};

/// Asserts a failure with exactly one non-empty stderr line containing every `needle`.
fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let (code, _, err) = tessera(args);
    assert_ne!(code, 0, "tessera {args:?} should fail; stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "tessera {args:?} panicked: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "tessera {args:?}: expected one error line, got {lines:?}"
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "tessera {args:?}: '{}' does not mention '{n}'",
            lines[0]
        );
    }
}

/// Writes an ONNX model with one node of an op type no importer supports.
fn write_unknown_op_model(path: &Path) {
    let mut node = NodeProto::new();
    node.name = "mystery_node".into();
    node.op_type = "FrobnicateTensor".into();
    node.input.push("x".into());
    node.output.push("y".into());
    let mut graph = GraphProto::new();
    graph.name = "g".into();
    graph.node.push(node);
    for (name, list) in [("x", &mut graph.input), ("y", &mut graph.output)] {
        let mut vi = ValueInfoProto::new();
        vi.name = name.into();
        list.push(vi);
    }
    let mut opset = OperatorSetIdProto::new();
    opset.version = 18;
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.opset_import.push(opset);
    model.graph = protobuf::MessageField::some(graph);
    std::fs::write(path, model.write_to_bytes().expect("encode model")).expect("write model");
}

#[test]
fn plan_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("broken.json");
    std::fs::write(&plan, "{ this is not json").unwrap();
    let p = plan.to_str().unwrap();
    assert_one_line_error(&["inspect", p], &["broken.json", "not a Tessera plan"]);
    assert_one_line_error(
        &["inspect", p, "--json"],
        &["broken.json", "not a Tessera plan"],
    );
    assert_one_line_error(&["dot", p], &["broken.json", "not a Tessera plan"]);
}

#[test]
fn json_that_is_not_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("other.json");
    let current = tessera_ir::plan::FORMAT_VERSION;
    let text = format!(r#"{{"format_version": {current}, "hello": "world"}}"#);
    std::fs::write(&plan, text).unwrap();
    assert_one_line_error(
        &["inspect", plan.to_str().unwrap()],
        &["other.json", "not a valid Tessera plan"],
    );
    // Version 1 plans recorded no weight-file hashes: refused, with what to do.
    std::fs::write(&plan, r#"{"format_version": 1, "hello": "world"}"#).unwrap();
    assert_one_line_error(
        &["inspect", plan.to_str().unwrap()],
        &["other.json", "format_version 1", "recompile"],
    );
    std::fs::write(&plan, r#"{"format_version": 99}"#).unwrap();
    assert_one_line_error(
        &["dot", plan.to_str().unwrap()],
        &["other.json", "version 99"],
    );
}

#[test]
fn missing_model() {
    for cmd in ["inspect", "dot", "compile"] {
        let mut args = vec![cmd, "no/such/model.onnx"];
        if cmd == "compile" {
            args.extend(["--devices", "2", "-o", "plan.json"]);
        }
        assert_one_line_error(&args, &["no/such/model.onnx"]);
    }
}

/// A temporary folder holding the model `name`, written by `write`.
fn model_in_tempdir(name: &str, write: fn(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(name);
    write(&model);
    (dir, model)
}

#[test]
fn model_with_an_unknown_op() {
    let (dir, model) = model_in_tempdir("mystery.onnx", write_unknown_op_model);
    let m = model.to_str().unwrap();
    assert_one_line_error(
        &["inspect", m],
        &["mystery.onnx", "FrobnicateTensor", "mystery_node"],
    );
    assert_one_line_error(&["dot", m], &["FrobnicateTensor"]);
    let plan = dir.path().join("plan.json");
    assert_one_line_error(
        &["compile", m, "--devices", "2", "-o", plan.to_str().unwrap()],
        &["FrobnicateTensor"],
    );
    assert!(
        !plan.exists(),
        "no plan is written for a model that does not import"
    );
}

#[test]
fn file_that_is_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("garbage.onnx");
    std::fs::write(&model, b"\xff\xfe not protobuf at all \x00\x01").unwrap();
    assert_one_line_error(&["inspect", model.to_str().unwrap()], &["garbage.onnx"]);
}

/// Deeply nested protobuf groups (RUSTSEC-2024-0437: protobuf 3.4 skips them by recursion
/// and overflowed the stack, aborting the process) get a one-line error naming the offset.
#[test]
fn deeply_nested_protobuf_groups() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("groups.onnx");
    std::fs::write(&model, vec![0x0b; 2_000_000]).unwrap();
    let m = model.to_str().unwrap();
    assert_one_line_error(
        &["inspect", m],
        &["groups.onnx", "nested more than 32", "byte 33"],
    );
    // The same inside a node of a graph, behind a valid header.
    let mut node = vec![0x0a, 0x80, 0x01];
    node.extend([0x0b; 64]);
    node.extend([0x0c; 64]);
    let mut bytes = vec![0x08, 0x08, 0x3a, 0x83, 0x01];
    bytes.extend(node);
    std::fs::write(&model, bytes).unwrap();
    assert_one_line_error(&["inspect", m], &["groups.onnx", "NodeProto"]);
}

#[test]
fn bad_shape_spec_and_bad_options() {
    let mlp = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/mlp.onnx");
    assert_one_line_error(&["inspect", mlp, "--shape", "x=4xfour"], &["four"]);
    assert_one_line_error(&["inspect", mlp, "--shape", "nosuch=4x64"], &["nosuch"]);
    assert_one_line_error(&["dot", mlp, "--format", "png"], &["png"]);
    assert_one_line_error(
        &["dot", mlp, "--shape", "x=4x64", "--rank", "1"],
        &["--rank", "mlp.onnx"],
    );
}

#[test]
fn device_counts_and_shapes_over_the_caps() {
    let mlp = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/models/mlp.onnx");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let plan = plan.to_str().unwrap();
    assert_one_line_error(
        &["compile", mlp, "--devices", "4294967296", "-o", plan],
        &["--devices 4294967296: over the limit of 4096 devices"],
    );
    assert_one_line_error(
        &["compile", mlp, "--mesh", "1x1000000", "-o", plan],
        &["--mesh 1x1000000: 1000000 devices is over the limit of 4096 devices"],
    );
    assert_one_line_error(
        &["inspect", mlp, "--shape", "x=99999999999x64"],
        &["'x'", "--shape", "[99999999999, 64]", "over the cap"],
    );
    assert_one_line_error(
        &["inspect", mlp, "--shape", "x=4611686018427387904x64"],
        &["'x'", "overflows the element count"],
    );
}

/// Writes an ONNX model with no nodes whose only output is an initializer.
fn write_initializer_only_model(path: &Path) {
    let mut w = onnx_protobuf::TensorProto::new();
    w.name = "w".into();
    w.data_type = 1;
    w.dims = vec![2];
    w.raw_data = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut graph = GraphProto::new();
    graph.name = "g".into();
    graph.initializer.push(w);
    let mut vi = ValueInfoProto::new();
    vi.name = "w".into();
    graph.output.push(vi);
    let mut opset = OperatorSetIdProto::new();
    opset.version = 18;
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.opset_import.push(opset);
    model.graph = Some(graph).into();
    std::fs::write(path, model.write_to_bytes().unwrap()).unwrap();
}

#[test]
fn model_with_no_nodes_whose_output_is_an_initializer() {
    let (dir, model) = model_in_tempdir("init_only.onnx", write_initializer_only_model);
    let m = model.to_str().unwrap();
    let plan = dir.path().join("plan.json");
    let plan = plan.to_str().unwrap();
    for args in [
        vec!["inspect", m],
        vec!["dot", m],
        vec!["compile", m, "--devices", "2", "-o", plan],
    ] {
        let (code, _, err) = tessera(&args);
        assert_eq!(code, 0, "tessera {args:?}: {err}");
    }
}
