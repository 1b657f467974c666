//! Unit tests of shape inference.
use super::*;
use crate::op::*;
use DType::{Bool, BF16, F32, I64};

fn one(op: Op, inputs: &[(DType, &[usize])]) -> Result<TypedShape, IrError> {
    let mut v = infer("n", &op, inputs)?;
    assert_eq!(v.len(), 1, "expected one output");
    Ok(v.remove(0))
}

fn shape(op: Op, inputs: &[(DType, &[usize])]) -> Vec<usize> {
    one(op, inputs).expect("inference should succeed").1
}

fn err(op: Op, inputs: &[(DType, &[usize])]) -> String {
    one(op, inputs)
        .expect_err("inference should fail")
        .to_string()
}

fn bin(kind: BinaryOp) -> Op {
    Op::Binary(BinaryAttrs { kind })
}

#[test]
fn broadcasting() {
    assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
    assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
    assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
    assert!(broadcasts_to(&[1, 3], &[4, 3]));
    assert!(!broadcasts_to(&[4, 3], &[1, 3]));
    assert_eq!(
        shape(bin(BinaryOp::Add), &[(F32, &[1, 128, 384]), (F32, &[384])]),
        vec![1, 128, 384]
    );
    let e = err(bin(BinaryOp::Add), &[(F32, &[2, 3]), (F32, &[4])]);
    assert!(
        e.contains("node 'n' (Add)") && e.contains("[2, 3]") && e.contains("[4]"),
        "{e}"
    );
    assert!(err(bin(BinaryOp::Mul), &[(F32, &[2]), (I64, &[2])]).contains("dtypes differ"));
}

#[test]
fn comparisons_and_logic_give_bool() {
    let (d, s) = one(bin(BinaryOp::Less), &[(I64, &[3, 1]), (I64, &[1, 4])]).unwrap();
    assert_eq!((d, s), (Bool, vec![3, 4]));
    assert_eq!(
        one(bin(BinaryOp::And), &[(Bool, &[2]), (Bool, &[2])])
            .unwrap()
            .0,
        Bool
    );
    assert!(one(bin(BinaryOp::And), &[(F32, &[2]), (F32, &[2])]).is_err());
    // On integers the logical ops are bitwise and keep the dtype; BitShift takes integers only.
    let xor = one(bin(BinaryOp::Xor), &[(I64, &[2]), (I64, &[1])]).unwrap();
    assert_eq!(xor, (I64, vec![2]));
    let shl = bin(BinaryOp::BitShift { left: true });
    assert_eq!(
        one(shl.clone(), &[(I64, &[2]), (I64, &[2])]).unwrap().0,
        I64
    );
    assert!(one(shl.clone(), &[(F32, &[2]), (F32, &[2])]).is_err());
    assert!(one(shl, &[(Bool, &[2]), (Bool, &[2])]).is_err());
    let not = Op::Unary(UnaryAttrs { kind: UnaryOp::Not });
    assert!(one(not.clone(), &[(F32, &[2])]).is_err());
    assert_eq!(one(not.clone(), &[(I64, &[2])]).unwrap().0, I64);
    assert_eq!(one(not, &[(Bool, &[2])]).unwrap().0, Bool);
    let isnan = Op::Unary(UnaryAttrs {
        kind: UnaryOp::IsNaN,
    });
    assert_eq!(one(isnan, &[(F32, &[2, 2])]).unwrap(), (Bool, vec![2, 2]));
    let w = one(Op::Where, &[(Bool, &[1, 1, 4]), (F32, &[3, 1]), (F32, &[])]).unwrap();
    assert_eq!(w, (F32, vec![1, 3, 4]));
    assert!(one(Op::Where, &[(F32, &[1]), (F32, &[1]), (F32, &[1])]).is_err());
}

#[test]
fn matmul_forms() {
    let mm = Op::MatMul(MatMulAttrs {});
    assert_eq!(
        shape(mm.clone(), &[(F32, &[2, 3]), (F32, &[3, 5])]),
        vec![2, 5]
    );
    assert_eq!(
        shape(mm.clone(), &[(F32, &[7, 1, 2, 3]), (F32, &[4, 3, 5])]),
        vec![7, 4, 2, 5]
    );
    assert_eq!(
        shape(mm.clone(), &[(F32, &[3]), (F32, &[2, 3, 5])]),
        vec![2, 5]
    );
    assert_eq!(
        shape(mm.clone(), &[(F32, &[2, 4, 3]), (F32, &[3])]),
        vec![2, 4]
    );
    assert_eq!(
        shape(mm.clone(), &[(F32, &[3]), (F32, &[3])]),
        Vec::<usize>::new()
    );
    let e = err(mm.clone(), &[(F32, &[2, 3]), (F32, &[4, 5])]);
    assert!(
        e.contains("MatMul") && e.contains("[2, 3]") && e.contains("[4, 5]"),
        "{e}"
    );
    assert!(err(mm, &[(F32, &[2, 2, 3]), (F32, &[3, 3, 5])]).contains("batch"));
}

#[test]
fn gemm_transposes() {
    let g = |ta, tb| {
        Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: ta,
            trans_b: tb,
        })
    };
    assert_eq!(
        shape(
            g(false, true),
            &[(F32, &[4, 3]), (F32, &[5, 3]), (F32, &[5])]
        ),
        vec![4, 5]
    );
    assert_eq!(
        shape(g(true, false), &[(F32, &[3, 4]), (F32, &[3, 5])]),
        vec![4, 5]
    );
    assert!(err(g(false, false), &[(F32, &[4, 3]), (F32, &[5, 3])]).contains("inner"));
    assert!(err(
        g(false, true),
        &[(F32, &[4, 3]), (F32, &[5, 3]), (F32, &[4])]
    )
    .contains("[4]"));
}

#[test]
fn einsum_matmul_like() {
    let e = |eq: &str| {
        Op::Einsum(EinsumAttrs {
            equation: eq.into(),
        })
    };
    assert_eq!(
        shape(
            e("bhid,bhjd->bhij"),
            &[(F32, &[1, 2, 5, 8]), (F32, &[1, 2, 7, 8])]
        ),
        vec![1, 2, 5, 7]
    );
    assert_eq!(shape(e("ij->ji"), &[(F32, &[2, 3])]), vec![3, 2]);
    assert!(err(e("ij,jk->ik"), &[(F32, &[2, 3]), (F32, &[4, 5])]).contains("label 'j'"));
    assert!(err(e("ij,jk"), &[(F32, &[2, 3]), (F32, &[3, 5])]).contains("->"));
}

#[test]
fn reductions_and_norms() {
    let r = |axes: Vec<usize>, keepdims| {
        Op::Reduce(ReduceAttrs {
            kind: ReduceKind::Mean,
            axes,
            keepdims,
        })
    };
    assert_eq!(shape(r(vec![2], true), &[(F32, &[1, 4, 8])]), vec![1, 4, 1]);
    assert_eq!(shape(r(vec![0, 2], false), &[(F32, &[1, 4, 8])]), vec![4]);
    assert!(err(r(vec![3], true), &[(F32, &[1, 4, 8])]).contains("axis 3"));
    let ln = Op::LayerNorm(NormAttrs {
        axis: 2,
        epsilon: 1e-5,
    });
    let ln_in: &[(DType, &[usize])] = &[(F32, &[1, 4, 8]), (F32, &[8]), (F32, &[8])];
    assert_eq!(
        infer("n", &ln, ln_in).unwrap(),
        vec![
            (F32, vec![1, 4, 8]),
            (F32, vec![1, 4, 1]),
            (F32, vec![1, 4, 1])
        ]
    );
    assert_eq!(
        infer_node("n", &ln, ln_in, 1).unwrap(),
        vec![(F32, vec![1, 4, 8])]
    );
    assert_eq!(infer_node("n", &ln, ln_in, 3).unwrap().len(), 3);
    assert!(infer_node("n", &ln, ln_in, 2)
        .unwrap_err()
        .to_string()
        .contains("binds 2 outputs, expected 1 or 3"));
    // Normalising from axis 0 reduces everything: the statistics have shape [1, 1, 1].
    let ln0 = Op::LayerNorm(NormAttrs {
        axis: 0,
        epsilon: 1e-5,
    });
    let outs = infer("n", &ln0, &[(BF16, &[2, 3, 4]), (BF16, &[2, 3, 4])]).unwrap();
    assert_eq!(outs[0], (BF16, vec![2, 3, 4]));
    assert_eq!(outs[2], (F32, vec![1, 1, 1]));
    assert!(infer("n", &ln, &[(F32, &[1, 4, 8]), (F32, &[4])])
        .unwrap_err()
        .to_string()
        .contains("[4]"));
    let sm = Op::Softmax(SoftmaxAttrs {
        axis: 3,
        log: false,
    });
    assert!(one(sm, &[(F32, &[1, 2, 3])]).is_err());
}

#[test]
fn shape_ops() {
    let rs = |s: Vec<usize>| Op::Reshape(ReshapeAttrs { shape: s });
    assert_eq!(shape(rs(vec![4, 6]), &[(F32, &[2, 3, 4])]), vec![4, 6]);
    assert!(err(rs(vec![5]), &[(F32, &[2, 3])]).contains("6 elements"));
    let tr = |p: Vec<usize>| Op::Transpose(TransposeAttrs { perm: p });
    assert_eq!(
        shape(tr(vec![0, 2, 1, 3]), &[(F32, &[1, 2, 3, 4])]),
        vec![1, 3, 2, 4]
    );
    assert!(one(tr(vec![0, 0, 1]), &[(F32, &[1, 2, 3])]).is_err());
    let cc = Op::Concat(AxisAttrs { axis: 1 });
    assert_eq!(
        shape(cc.clone(), &[(I64, &[2, 1]), (I64, &[2, 3])]),
        vec![2, 4]
    );
    assert!(one(cc, &[(I64, &[2, 1]), (I64, &[3, 3])]).is_err());
    let sp = Op::Split(SplitAttrs {
        axis: 0,
        sizes: vec![1, 2],
    });
    let outs = infer("n", &sp, &[(F32, &[3, 4])]).unwrap();
    assert_eq!(outs, vec![(F32, vec![1, 4]), (F32, vec![2, 4])]);
    let sp = Op::Split(SplitAttrs {
        axis: 0,
        sizes: vec![1, 1],
    });
    assert!(infer("n", &sp, &[(F32, &[3, 4])]).is_err());
    let ex = |s: Vec<usize>| Op::Expand(ExpandAttrs { shape: s });
    assert_eq!(shape(ex(vec![2, 1, 4]), &[(F32, &[3, 1])]), vec![2, 3, 4]);
    assert!(one(ex(vec![2, 4]), &[(F32, &[3, 1])]).is_err());
    let cast = Op::Cast(CastAttrs { to: I64 });
    assert_eq!(one(cast, &[(F32, &[2])]).unwrap(), (I64, vec![2]));
    assert!(one(Op::Trilu(TriluAttrs { upper: true, k: 0 }), &[(F32, &[3])]).is_err());
    let cs = Op::CumSum(CumSumAttrs {
        axis: 1,
        exclusive: false,
        reverse: false,
    });
    assert_eq!(shape(cs, &[(I64, &[2, 3])]), vec![2, 3]);
}

#[test]
fn slices() {
    assert_eq!(normalize_slice(0, i64::MAX, 1, 10), (0, 10));
    assert_eq!(normalize_slice(-3, -1, 1, 10), (7, 9));
    assert_eq!(normalize_slice(-1, i64::MIN, -1, 10), (9, -1));
    assert_eq!(normalize_slice(20, -20, -2, 10), (9, -1));
    let sl = |starts, ends, steps| {
        Op::Slice(SliceAttrs {
            axes: vec![1],
            starts,
            ends,
            steps,
        })
    };
    assert_eq!(
        shape(sl(vec![1], vec![7], vec![2]), &[(F32, &[2, 10])]),
        vec![2, 3]
    );
    assert_eq!(
        shape(sl(vec![9], vec![-1], vec![-1]), &[(F32, &[2, 10])]),
        vec![2, 10]
    );
    assert_eq!(
        shape(sl(vec![9], vec![-1], vec![-3]), &[(F32, &[2, 10])]),
        vec![2, 4]
    );
    assert_eq!(
        shape(sl(vec![5], vec![2], vec![1]), &[(F32, &[2, 10])]),
        vec![2, 0]
    );
    assert!(one(sl(vec![0], vec![11], vec![1]), &[(F32, &[2, 10])]).is_err());
    assert!(one(sl(vec![0], vec![5], vec![0]), &[(F32, &[2, 10])]).is_err());
}

#[test]
fn gathers() {
    let g = |axis| Op::Gather(AxisAttrs { axis });
    assert_eq!(
        shape(g(0), &[(F32, &[30522, 384]), (I64, &[1, 128])]),
        vec![1, 128, 384]
    );
    assert_eq!(shape(g(1), &[(F32, &[2, 5, 3]), (I64, &[])]), vec![2, 3]);
    assert!(one(g(0), &[(F32, &[4]), (F32, &[1])]).is_err());
    let gn = |b| Op::GatherNd(GatherNdAttrs { batch_dims: b });
    assert_eq!(
        shape(gn(0), &[(F32, &[2, 3, 4]), (I64, &[5, 2])]),
        vec![5, 4]
    );
    assert_eq!(
        shape(gn(1), &[(F32, &[2, 3, 4]), (I64, &[2, 1])]),
        vec![2, 4]
    );
    assert!(one(gn(0), &[(F32, &[2, 3]), (I64, &[5, 3])]).is_err());
}

fn attention(q_heads: Option<usize>, kv_heads: Option<usize>, has_past: bool) -> Op {
    attention_out(q_heads, kv_heads, has_past, false)
}

fn attention_out(
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    has_past: bool,
    qk_output: bool,
) -> Op {
    Op::Attention(AttentionAttrs {
        qk_output,
        is_causal: true,
        q_num_heads: q_heads,
        kv_num_heads: kv_heads,
        has_past,
        ..Default::default()
    })
}

#[test]
fn attention_outputs_and_errors() {
    // 4-D grouped-query with a past of 5: Y, or the scores over 5 + 7 keys.
    let q: &[usize] = &[2, 8, 7, 16];
    let kv: &[usize] = &[2, 4, 7, 16];
    let past: &[usize] = &[2, 4, 5, 16];
    let ins = [(F32, q), (F32, kv), (F32, kv), (F32, past), (F32, past)];
    assert_eq!(shape(attention(None, None, true), &ins), vec![2, 8, 7, 16]);
    assert_eq!(
        shape(attention_out(None, None, true, true), &ins),
        vec![2, 8, 7, 12]
    );
    // 3-D: heads from the attributes; Y keeps the 3-D layout.
    let y = infer(
        "n",
        &attention(Some(4), Some(2), false),
        &[(F32, &[1, 6, 32]), (F32, &[1, 9, 16]), (F32, &[1, 9, 16])],
    )
    .unwrap();
    assert_eq!(y[0].1, vec![1, 6, 32]);
    let e = infer(
        "n",
        &attention(None, None, false),
        &[(F32, &[1, 6, 32]), (F32, &[1, 9, 16]), (F32, &[1, 9, 16])],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("q_num_heads"), "{e}");
    // 6 query heads cannot share 4 key/value heads.
    let e = infer(
        "n",
        &attention(None, None, false),
        &[
            (F32, &[1, 6, 3, 8]),
            (F32, &[1, 4, 3, 8]),
            (F32, &[1, 4, 3, 8]),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[1, 6, 3, 8]"), "{e}");
}

#[test]
fn outputs_over_the_size_cap_or_overflowing_are_errors() {
    let ex = |s: Vec<usize>| Op::Expand(ExpandAttrs { shape: s });
    let e = err(ex(vec![1 << 53]), &[(F32, &[1])]);
    assert!(
        e.contains("node 'n' (Expand): output 0: shape [9007199254740992] of f32")
            && e.contains("over the cap"),
        "{e}"
    );
    let e = err(ex(vec![1 << 62, 1 << 62]), &[(F32, &[1])]);
    assert!(e.contains("overflows the element count"), "{e}");
    let rs = Op::Reshape(ReshapeAttrs {
        shape: vec![1 << 62, 1 << 62, 0],
    });
    assert_eq!(shape(rs, &[(F32, &[0])]), vec![1 << 62, 1 << 62, 0]);
    let rs = Op::Reshape(ReshapeAttrs {
        shape: vec![1 << 62, 1 << 3],
    });
    assert!(err(rs, &[(F32, &[4])]).contains("overflows"));
}
