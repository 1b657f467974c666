//! Import of the selection, scatter, one-hot, normalisation and bitwise ops added after the
//! extra op set: what each becomes, and a one-line error naming the node and op for every bad
//! input.
mod import_util;

use import_util::*;
use onnx_protobuf::AttributeProto;
use tessera_ir::op::{
    BinaryAttrs, BinaryOp, ScatterElementsAttrs, ScatterNdAttrs, ScatterReduction, TopKAttrs,
};
use tessera_ir::Op;

/// TopK on x (`elem`, [2, 3]) with k a constant (`Some`) or a graph input (`None`).
fn topk(opset: i64, elem: i32, k: Option<&[i64]>, attrs: Vec<AttributeProto>) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    b.input("x", elem, &[D::N(2), D::N(3)]);
    match k {
        Some(k) => {
            b.init_i64("k", &[k.len() as i64], k);
        }
        None => {
            b.input("k", INT64, &[D::N(1)]);
        }
    }
    b.node("TopK", &["x", "k"], &["v", "i"], attrs)
        .output("v")
        .output("i");
    b
}

/// `op` (ScatterElements / ScatterND) of constant updates into x (`elem`, [2, 3]).
fn scatter(opset: i64, op: &str, elem: i32, attrs: Vec<AttributeProto>) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    b.input("x", elem, &[D::N(2), D::N(3)]);
    if op == "ScatterND" {
        b.init_i64("idx", &[1, 1], &[1]);
    } else {
        b.init_i64("idx", &[1, 3], &[1, 0, 1]);
    }
    if elem == BOOL {
        b.input("u", BOOL, &[D::N(1), D::N(3)]);
    } else {
        b.init_f32_raw("u", &[1, 3], &[1.0, 2.0, 3.0]);
    }
    b.node(op, &["x", "idx", "u"], &["y"], attrs).output("y");
    b
}

#[test]
fn topk_and_scatters_import_as_one_op() {
    let m = import(&topk(13, FLOAT, Some(&[2]), vec![attr_int("largest", 0)])).unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::TopK(TopKAttrs {
            axis: 1,
            k: 2,
            largest: false
        })
    );
    assert_eq!(m.graph.nodes[0].outputs.len(), 2);
    // sorted = 0 is accepted (the output is sorted, a valid unspecified order); k = 0 too.
    let b = topk(
        24,
        INT64,
        Some(&[0]),
        vec![attr_int("sorted", 0), attr_int("axis", 0)],
    );
    assert_eq!(ops(&import(&b).unwrap()), ["TopK"]);
    let m = import(&scatter(
        18,
        "ScatterElements",
        FLOAT,
        vec![attr_str("reduction", "max")],
    ))
    .unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::ScatterElements(ScatterElementsAttrs {
            axis: 0,
            reduction: ScatterReduction::Max
        })
    );
    let m = import(&scatter(
        16,
        "ScatterND",
        FLOAT,
        vec![attr_str("reduction", "mul")],
    ))
    .unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::ScatterNd(ScatterNdAttrs {
            reduction: ScatterReduction::Mul
        })
    );
    // Bool data without a reduction is a plain copy.
    assert_eq!(
        ops(&import(&scatter(13, "ScatterND", BOOL, vec![])).unwrap()),
        ["ScatterND"]
    );
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_node() {
    let cases: Vec<(ModelBuilder, &[&str])> = vec![
        (
            topk(13, FLOAT, None, vec![]),
            &["TopK", "input 1 (K, 'k') must be a constant", "static"],
        ),
        (
            topk(13, FLOAT, Some(&[4]), vec![]),
            &["TopK", "k = 4 must be in 0..=3"],
        ),
        (
            topk(13, FLOAT, Some(&[-1]), vec![]),
            &["TopK", "k = -1 must be in 0..=3"],
        ),
        (
            topk(13, FLOAT, Some(&[1, 2]), vec![]),
            &["TopK", "must hold one value"],
        ),
        (
            topk(13, BOOL, Some(&[1]), vec![]),
            &["TopK", "expects a numeric input, got bool"],
        ),
        (
            topk(13, FLOAT, Some(&[1]), vec![attr_int("axis", 2)]),
            &["TopK", "axis 2 out of range for rank 2"],
        ),
        (
            topk(13, FLOAT, Some(&[1]), vec![attr_int("largest", 2)]),
            &["TopK", "largest must be 0 or 1"],
        ),
        (
            scatter(
                16,
                "ScatterElements",
                FLOAT,
                vec![attr_str("reduction", "max")],
            ),
            &["ScatterElements", "unknown reduction 'max' at opset 16"],
        ),
        (
            scatter(18, "ScatterND", FLOAT, vec![attr_str("reduction", "sum")]),
            &["ScatterND", "unknown reduction 'sum'"],
        ),
        (
            scatter(18, "ScatterND", BOOL, vec![attr_str("reduction", "add")]),
            &["ScatterND", "reduction 'add' needs numbers, got bool"],
        ),
        (
            scatter(18, "ScatterElements", FLOAT, vec![attr_int("axis", -3)]),
            &["ScatterElements", "axis -3 out of range for rank 2"],
        ),
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
    // Updates of the wrong shape fail shape inference, naming the op.
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(2), D::N(3)]);
    b.init_i64("idx", &[1, 3], &[1, 0, 1]);
    b.init_f32_raw("u", &[1, 2], &[1.0, 2.0]);
    b.node("ScatterElements", &["x", "idx", "u"], &["y"], vec![])
        .output("y");
    let s = import(&b).expect_err("updates shape");
    assert_mentions(
        &s,
        &["ScatterElements", "must have the shape of the indices"],
    );
}

/// `op` on x (FLOAT, `dims`) with constant float inputs `extra` and `attrs`, at `opset`.
fn on_x(
    opset: i64,
    op: &str,
    dims: &[i64],
    extra: &[(&str, &[i64], &[f32])],
    attrs: Vec<AttributeProto>,
) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    let ds: Vec<D> = dims.iter().map(|&d| D::N(d)).collect();
    b.input("x", FLOAT, &ds);
    let mut inputs = vec!["x"];
    for (name, dims, data) in extra {
        b.init_f32_raw(name, dims, data);
        inputs.push(name);
    }
    b.node(op, &inputs, &["y"], attrs).output("y");
    b
}

/// OneHot of int64 indices [2, 3] with the given depth (a constant, or a graph input when
/// `None`) and values.
fn one_hot(depth: Option<&[f32]>, values: &[i64], attrs: Vec<AttributeProto>) -> ModelBuilder {
    let mut b = ModelBuilder::new(13);
    b.input("i", INT64, &[D::N(2), D::N(3)]);
    match depth {
        Some(d) => {
            b.init_f32_raw("depth", &[d.len() as i64], d);
        }
        None => {
            b.input("depth", FLOAT, &[D::N(1)]);
        }
    }
    let n = values.iter().product::<i64>() as usize;
    b.init_f32_raw("values", values, &vec![1.0; n]);
    b.node("OneHot", &["i", "depth", "values"], &["y"], attrs)
        .output("y");
    b
}

#[test]
fn one_hot_hardmax_and_eye_like_lower_or_fold() {
    // The constant values fold: their Gathers leave no node.
    let m = import(&one_hot(Some(&[5.0]), &[2], vec![attr_int("axis", 0)])).unwrap();
    assert_eq!(
        ops(&m),
        ["Less", "Add", "Where", "Reshape", "Equal", "Where"]
    );
    let out = m.graph.outputs[0];
    assert_eq!(m.graph.tensor(out).shape, vec![5, 2, 3]);
    let m = import(&on_x(
        13,
        "Hardmax",
        &[2, 3],
        &[],
        vec![attr_int("axis", 0)],
    ))
    .unwrap();
    assert_eq!(ops(&m), ["ArgMax", "Equal", "Cast"]);
    // EyeLike is a constant: nothing left to run but the Identity to the output.
    let m = import(&on_x(22, "EyeLike", &[2, 3], &[], vec![attr_int("k", 1)])).unwrap();
    assert!(
        m.graph.nodes.iter().all(|n| n.op.name() != "EyeLike"),
        "{:?}",
        ops(&m)
    );
}

#[test]
fn normalisations_lower_to_existing_ops() {
    let cases: [(&str, i64, Vec<AttributeProto>, &[&str]); 5] = [
        (
            "LpNormalization",
            13,
            vec![],
            &["ReduceL2", "Div", "Equal", "Where"],
        ),
        (
            "LpNormalization",
            22,
            vec![attr_int("p", 1)],
            &["Abs", "ReduceSum", "Div", "Equal", "Where"],
        ),
        (
            "MeanVarianceNormalization",
            13,
            vec![],
            &[
                "ReduceMean",
                "Mul",
                "Mul",
                "ReduceMean",
                "Sub",
                "Max",
                "Sqrt",
                "Sub",
                "Add",
                "Div",
            ],
        ),
        (
            "LRN",
            13,
            vec![attr_int("size", 3)],
            &[
                "Mul",
                "Reshape",
                "AveragePool",
                "Reshape",
                "Mul",
                "Add",
                "Pow",
                "Div",
            ],
        ),
        (
            "Shrink",
            13,
            vec![],
            &["Less", "Greater", "Add", "Sub", "Where", "Where"],
        ),
    ];
    for (op, opset, attrs, want) in cases {
        let m = import(&on_x(opset, op, &[2, 4, 3, 3], &[], attrs)).unwrap();
        assert_eq!(ops(&m), want, "{op}");
    }
}

#[test]
fn bad_one_hot_and_norm_inputs_are_one_line_errors() {
    let cases: Vec<(ModelBuilder, &[&str])> = vec![
        (
            one_hot(None, &[2], vec![]),
            &["OneHot", "input 1 ('depth') must be a constant"],
        ),
        (
            one_hot(Some(&[0.0]), &[2], vec![]),
            &["OneHot", "depth must be a positive integer, got 0"],
        ),
        (
            one_hot(Some(&[3.0, 4.0]), &[2], vec![]),
            &["OneHot", "depth must hold one value"],
        ),
        (
            one_hot(Some(&[3.0]), &[3], vec![]),
            &[
                "OneHot",
                "values must be [off_value, on_value], got shape [3]",
            ],
        ),
        (
            one_hot(Some(&[3.0]), &[2], vec![attr_int("axis", 3)]),
            &["OneHot", "axis 3 out of range for rank 3"],
        ),
        (
            on_x(13, "Hardmax", &[2, 3], &[], vec![attr_int("axis", 2)]),
            &["Hardmax", "axis 2 out of range"],
        ),
        (
            on_x(13, "EyeLike", &[2, 3, 4], &[], vec![]),
            &["EyeLike", "expects a 2-D input, got shape [2, 3, 4]"],
        ),
        (
            on_x(13, "EyeLike", &[2, 3], &[], vec![attr_int("dtype", 8)]),
            &["EyeLike", "dtype 8 is not supported"],
        ),
        (
            on_x(13, "LpNormalization", &[2, 3], &[], vec![attr_int("p", 3)]),
            &["LpNormalization", "p must be 1 or 2, got 3"],
        ),
        (
            on_x(13, "LRN", &[2, 3, 4], &[], vec![attr_int("size", 0)]),
            &["LRN", "size must be at least 1, got 0"],
        ),
        (
            on_x(13, "LRN", &[3], &[], vec![attr_int("size", 1)]),
            &["LRN", "expects [N, C, ...], got shape [3]"],
        ),
        (
            on_x(13, "MeanVarianceNormalization", &[2, 3], &[], vec![]),
            &[
                "MeanVarianceNormalization",
                "axis 2 out of range for rank 2",
            ],
        ),
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
    let mut b = ModelBuilder::new(13);
    b.input("x", BOOL, &[D::N(2)]);
    b.node("Shrink", &["x"], &["y"], vec![]).output("y");
    assert_mentions(
        &import(&b).expect_err("bool Shrink"),
        &["Shrink", "expects a numeric input, got bool"],
    );
}

/// `op` on two inputs of `elem` [2, 3].
fn two_inputs(opset: i64, op: &str, elem: i32, attrs: Vec<AttributeProto>) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    b.input("a", elem, &[D::N(2), D::N(3)]);
    b.input("b", elem, &[D::N(2), D::N(3)]);
    b.node(op, &["a", "b"], &["y"], attrs).output("y");
    b
}

#[test]
fn bitwise_ops_import_and_refuse_non_integers() {
    for (op, want) in [
        ("BitwiseAnd", "And"),
        ("BitwiseOr", "Or"),
        ("BitwiseXor", "Xor"),
    ] {
        assert_eq!(
            ops(&import(&two_inputs(18, op, INT64, vec![])).unwrap()),
            [want]
        );
    }
    let m = import(&two_inputs(
        13,
        "BitShift",
        INT64,
        vec![attr_str("direction", "RIGHT")],
    ))
    .unwrap();
    assert_eq!(
        m.graph.nodes[0].op,
        Op::Binary(BinaryAttrs {
            kind: BinaryOp::BitShift { left: false }
        })
    );
    let cases: Vec<(ModelBuilder, &[&str])> = vec![
        (
            two_inputs(18, "BitwiseAnd", FLOAT, vec![]),
            &["BitwiseAnd", "input 0 must be an integer tensor, got f32"],
        ),
        (
            two_inputs(18, "BitwiseXor", BOOL, vec![]),
            &["BitwiseXor", "must be an integer tensor, got bool"],
        ),
        (
            two_inputs(13, "BitShift", INT64, vec![attr_str("direction", "UP")]),
            &["BitShift", "direction must be LEFT or RIGHT, got 'UP'"],
        ),
        (
            two_inputs(13, "BitShift", INT64, vec![]),
            &[
                "BitShift",
                "required attribute 'direction' (STRING) is missing",
            ],
        ),
        // ONNX's logical ops stay bool-only although the IR ops are bitwise on integers.
        (
            two_inputs(13, "And", INT64, vec![]),
            &["And", "input 0 must be bool, got i64"],
        ),
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(2)]);
    b.node("BitwiseNot", &["x"], &["y"], vec![]).output("y");
    assert_mentions(
        &import(&b).expect_err("float BitwiseNot"),
        &["BitwiseNot", "must be an integer tensor, got f32"],
    );
}
