//! Canonical Linear: Gemm (with or without transB, on a flattened input) and MatMul of a
//! transposed weight become MatMul (+ Add) over a weight read transposed at load time.
mod partition_common;

use partition_common::B;
use std::collections::BTreeMap;
use tessera_compiler::canon::{builtin, canonicalize, CanonLimits, CanonReport};
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op};

fn canon(b: &B) -> (Graph, CanonReport) {
    canonicalize(&b.g, &BTreeMap::new(), &builtin(), &CanonLimits::default())
}

fn ops(r: &CanonReport) -> Vec<(String, usize)> {
    r.ops_after.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn gemm(alpha: f32, trans_b: bool) -> Op {
    Op::Gemm(GemmAttrs {
        alpha,
        beta: 1.0,
        trans_a: false,
        trans_b,
    })
}

/// x [2, 3, 4] → Reshape [6, 4] → Gemm(W [5, 4] or [4, 5], b [5]) → Reshape [2, 3, 5].
fn flattened_gemm(alpha: f32, trans_b: bool) -> B {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 3, 4]);
    let w = b.weight("w", if trans_b { &[5, 4] } else { &[4, 5] });
    let bias = b.weight("b", &[5]);
    let x2 = b.op(Op::Reshape(ReshapeAttrs { shape: vec![6, 4] }), &[x]);
    let y2 = b.op(gemm(alpha, trans_b), &[x2, w, bias]);
    let y = b.op(
        Op::Reshape(ReshapeAttrs {
            shape: vec![2, 3, 5],
        }),
        &[y2],
    );
    b.g.outputs.push(y);
    b
}

#[test]
fn gemm_trans_b_on_a_flattened_input_is_a_matmul_over_a_transposed_weight() {
    let (g, r) = canon(&flattened_gemm(1.0, true));
    assert_eq!(
        ops(&r),
        vec![("Add".into(), 1), ("MatMul".into(), 1)],
        "{r:?}"
    );
    assert_eq!(r.kept_source, None);
    let mm = g.nodes.iter().find(|n| n.op.name() == "MatMul").unwrap();
    assert_eq!(g.tensor(mm.inputs[0]).shape, vec![2, 3, 4], "the 3-D input");
    let w = &g.weights[&mm.inputs[1]];
    assert_eq!(w.shape, vec![4, 5], "logical [in, out]");
    assert_eq!(w.perm, Some(vec![1, 0]), "stored [out, in]");
    assert_eq!(w.stored_view().unwrap().shape, vec![5, 4]);
    assert_eq!(g.weights.len(), 2, "no untransposed copy of the weight");
    for rule in ["gemm-trans-b", "transposed-weight", "matmul-flatten"] {
        assert!(r.applied.contains_key(rule), "{rule} did not fire: {r:?}");
    }
}

#[test]
fn plain_gemm_is_a_matmul_and_a_scaled_one_stays_gemm() {
    let (g, r) = canon(&flattened_gemm(1.0, false));
    assert_eq!(ops(&r), vec![("Add".into(), 1), ("MatMul".into(), 1)]);
    assert!(g.weights.values().all(|w| w.perm.is_none()));
    let (_, r) = canon(&flattened_gemm(2.0, true));
    assert_eq!(r.ops_after.get("Gemm"), Some(&1), "{r:?}");
    assert!(!r.applied.contains_key("transposed-weight"));
}

#[test]
fn a_transposed_weight_read_elsewhere_keeps_its_transpose() {
    // A tied embedding: Gather(W, ids) and x · Wᵀ read one table.
    let mut b = B::new();
    let ids = b.input("ids", DType::I64, &[2, 3]);
    let w = b.weight("wte", &[10, 4]);
    let h = b.op(Op::Gather(AxisAttrs { axis: 0 }), &[w, ids]);
    let wt = b.op(Op::Transpose(TransposeAttrs { perm: vec![1, 0] }), &[w]);
    let logits = b.op(Op::MatMul(MatMulAttrs {}), &[h, wt]);
    b.g.outputs.push(logits);
    let (g, r) = canon(&b);
    assert_eq!(r.ops_after.get("Transpose"), Some(&1), "{r:?}");
    assert_eq!(g.weights.len(), 1);
    assert!(g.weights.values().all(|w| w.perm.is_none()));
}
