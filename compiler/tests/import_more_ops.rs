//! Import of the selection, scatter, one-hot, normalisation and bitwise ops added after the
//! extra op set: what each becomes, and a one-line error naming the node and op for every bad
//! input.
mod import_util;

use import_util::*;
use onnx_protobuf::AttributeProto;
use tessera_compiler::onnx::{import_bytes, ImportedModel};
use tessera_ir::op::TopKAttrs;
use tessera_ir::Op;

fn import(b: &ModelBuilder) -> Result<ImportedModel, String> {
    import_bytes(&b.bytes(), "m.onnx", &opts("")).map_err(|e| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "error is not one line: {s}");
        s
    })
}

fn ops(m: &ImportedModel) -> Vec<String> {
    m.graph.nodes.iter().map(|n| n.op.name()).collect()
}

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

#[test]
fn topk_imports_as_one_op() {
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
    ];
    for (b, parts) in cases {
        let s = import(&b).expect_err(parts[0]);
        assert_mentions(&s, parts);
    }
}
