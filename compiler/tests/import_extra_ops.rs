//! Import of the activations, trigonometric ops and reductions added after the first op set:
//! what each lowers to, and a one-line error naming the node and op for every bad input.
mod import_util;

use import_util::*;
use tessera_ir::op::{ArgReduceAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::{DType, Op};

/// One `op` node on x (`elem`, [2, 3]) with `extra` inputs and `attrs`, at `opset`.
fn one_node(
    opset: i64,
    op: &str,
    elem: i32,
    extra: &[(&str, &[i64])],
    attrs: Vec<onnx_protobuf::AttributeProto>,
) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    b.input("x", elem, &[D::N(2), D::N(3)]);
    let mut inputs = vec!["x"];
    for (name, dims) in extra {
        let n: i64 = dims.iter().product();
        b.init_f32_raw(name, dims, &vec![0.25; n as usize]);
        inputs.push(name);
    }
    b.node_in("", op, &inputs, &["y"], attrs).output("y");
    b
}

#[test]
fn activations_lower_to_elementwise_chains() {
    let cases: [(&str, i64, &[&str]); 8] = [
        ("LeakyRelu", 16, &["Max", "Min", "Mul", "Add"]),
        ("Elu", 18, &["Max", "Min", "Exp", "Sub", "Mul", "Add"]),
        (
            "Selu",
            18,
            &["Max", "Min", "Exp", "Sub", "Mul", "Add", "Mul"],
        ),
        // alpha = 1: no division by alpha.
        ("Celu", 18, &["Max", "Min", "Exp", "Sub", "Mul", "Add"]),
        ("ThresholdedRelu", 18, &["Greater", "Where"]),
        ("Softsign", 18, &["Abs", "Add", "Div"]),
        ("Mish", 18, &["Softplus", "Tanh", "Mul"]),
        ("Tan", 18, &["Tan"]),
    ];
    for (op, opset, want) in cases {
        let m = import(&one_node(opset, op, FLOAT, &[], vec![])).unwrap();
        let mut got = ops(&m);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{op}");
    }
    let celu = one_node(18, "Celu", FLOAT, &[], vec![attr_float("alpha", 2.0)]);
    assert!(ops(&import(&celu).unwrap()).contains(&"Div".to_string()));
    let m = import(&one_node(16, "PRelu", FLOAT, &[("slope", &[3])], vec![])).unwrap();
    assert_eq!(ops(&m).len(), 4);
    let m = import(&one_node(18, "Acosh", FLOAT, &[], vec![])).unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Acosh
        })
    );
}

#[test]
fn arg_max_and_reductions_import() {
    let m = import(&one_node(
        13,
        "ArgMin",
        FLOAT,
        &[],
        vec![
            attr_int("axis", -1),
            attr_int("keepdims", 0),
            attr_int("select_last_index", 1),
        ],
    ))
    .unwrap();
    let y = m.graph.outputs[0];
    assert_eq!(m.graph.tensor(y).dtype, DType::I64);
    assert_eq!(m.graph.tensor(y).shape, vec![2]);
    assert_eq!(
        m.graph.nodes[0].op,
        Op::ArgReduce(ArgReduceAttrs {
            max: false,
            axis: 1,
            keepdims: false,
            select_last_index: true
        })
    );
    // Opset 13: axes as an attribute; keepdims 0 reshapes the max before the final Add.
    let m = import(&one_node(
        13,
        "ReduceLogSumExp",
        FLOAT,
        &[],
        vec![attr_ints("axes", &[0]), attr_int("keepdims", 0)],
    ))
    .unwrap();
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![3]);
    assert!(ops(&m).contains(&"Reshape".to_string()));
    for op in ["ReduceL1", "ReduceLogSum"] {
        let m = import(&one_node(13, op, FLOAT, &[], vec![attr_ints("axes", &[1])])).unwrap();
        assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![2, 1], "{op}");
    }
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_node() {
    let cases: Vec<(ModelBuilder, &[&str])> = vec![
        (
            one_node(16, "LeakyRelu", INT64, &[], vec![]),
            &["LeakyRelu", "expects a float input, got i64"],
        ),
        (
            one_node(18, "Celu", FLOAT, &[], vec![attr_float("alpha", 0.0)]),
            &["Celu", "alpha must be finite and non-zero"],
        ),
        (
            one_node(16, "PRelu", FLOAT, &[("slope", &[2])], vec![]),
            &["PRelu", "does not broadcast to X's shape [2, 3]"],
        ),
        (
            one_node(13, "ArgMax", FLOAT, &[], vec![attr_int("axis", 2)]),
            &["ArgMax", "axis 2 out of range for rank 2"],
        ),
        (
            one_node(13, "ArgMax", FLOAT, &[], vec![attr_float("axis", 1.0)]),
            &["ArgMax", "attribute 'axis' has type FLOAT"],
        ),
        (
            one_node(13, "ArgMax", BOOL, &[], vec![]),
            &["ArgMax", "expects a numeric input, got bool"],
        ),
        (
            one_node(
                13,
                "ArgMin",
                FLOAT,
                &[],
                vec![attr_int("select_last_index", 2)],
            ),
            &["ArgMin", "select_last_index must be 0 or 1"],
        ),
        (
            one_node(13, "ReduceLogSumExp", INT64, &[], vec![]),
            &["ReduceLogSumExp", "expects a float input"],
        ),
        (
            one_node(13, "Elu", FLOAT, &[], vec![attr_int("alpha", 1)]),
            &["Elu", "attribute 'alpha' has type INT"],
        ),
        (one_node(13, "Atan", INT64, &[], vec![]), &["Atan", "float"]),
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
}

/// A 4-D float input x ([1, 8, 4, 6]) into one `op` node with `attrs` (and, for Tile,
/// `repeats` as an int64 initializer or a graph input when `None`).
fn layout_node(
    op: &str,
    repeats: Option<Option<&[i64]>>,
    attrs: Vec<onnx_protobuf::AttributeProto>,
) -> ModelBuilder {
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(1), D::N(8), D::N(4), D::N(6)]);
    let mut inputs = vec!["x"];
    match repeats {
        Some(Some(r)) => {
            b.init_i64("r", &[r.len() as i64], r);
            inputs.push("r");
        }
        Some(None) => {
            b.input("r", INT64, &[D::N(4)]);
            inputs.push("r");
        }
        None => {}
    }
    b.node_in("", op, &inputs, &["y"], attrs).output("y");
    b
}

#[test]
fn tile_depth_space_and_is_inf_lower_to_existing_ops() {
    let m = import(&layout_node("Tile", Some(Some(&[2, 1, 3, 1])), vec![])).unwrap();
    assert_eq!(ops(&m), ["Reshape", "Expand", "Reshape"]);
    let out = m.graph.tensor(m.graph.outputs[0]);
    assert_eq!(out.shape, vec![2, 8, 12, 6]);
    for (mode, perm) in [("DCR", [0, 3, 4, 1, 5, 2]), ("CRD", [0, 1, 4, 2, 5, 3])] {
        let m = import(&layout_node(
            "DepthToSpace",
            None,
            vec![attr_int("blocksize", 2), attr_str("mode", mode)],
        ))
        .unwrap();
        assert_eq!(ops(&m), ["Reshape", "Transpose", "Reshape"]);
        assert!(matches!(&m.graph.nodes[1].op, Op::Transpose(t) if t.perm == perm));
        assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![1, 2, 8, 12]);
    }
    let m = import(&layout_node(
        "SpaceToDepth",
        None,
        vec![attr_int("blocksize", 2)],
    ))
    .unwrap();
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![1, 32, 2, 3]);
    let m = import(&layout_node("IsInf", None, vec![])).unwrap();
    assert_eq!(ops(&m), ["Equal", "Equal", "Or"]);
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).dtype, DType::Bool);
}

#[test]
fn bad_layout_inputs_are_one_line_errors_naming_the_node() {
    let cases: Vec<(ModelBuilder, &[&str])> = vec![
        (
            layout_node("Tile", Some(None), vec![]),
            &["Tile", "input 1", "must be a constant"],
        ),
        (
            layout_node("Tile", Some(Some(&[2, 2])), vec![]),
            &["Tile", "one entry per axis"],
        ),
        (
            layout_node("Tile", Some(Some(&[1, -1, 1, 1])), vec![]),
            &["Tile", "non-negative"],
        ),
        (
            layout_node("DepthToSpace", None, vec![attr_int("blocksize", 3)]),
            &[
                "DepthToSpace",
                "8 channels do not divide into blocks of 3x3",
            ],
        ),
        (
            layout_node(
                "DepthToSpace",
                None,
                vec![attr_int("blocksize", 2), attr_str("mode", "XYZ")],
            ),
            &["DepthToSpace", "unknown mode 'XYZ'"],
        ),
        (
            layout_node("SpaceToDepth", None, vec![attr_int("blocksize", 4)]),
            &["SpaceToDepth", "not multiples of blocksize 4"],
        ),
        (
            layout_node("SpaceToDepth", None, vec![attr_int("blocksize", 0)]),
            &["SpaceToDepth", "blocksize must be at least 1"],
        ),
        (
            one_node(18, "IsInf", INT64, &[], vec![]),
            &["IsInf", "expects a float input"],
        ),
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
}
