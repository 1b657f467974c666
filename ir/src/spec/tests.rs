//! Unit tests of the op specs (the walk over every op is `compiler/tests/op_coverage.rs`).
use super::*;
use crate::op::*;
use std::collections::HashSet;

fn attention(q_heads: Option<usize>, kv_heads: Option<usize>, has_past: bool) -> Op {
    Op::Attention(AttentionAttrs {
        q_num_heads: q_heads,
        kv_num_heads: kv_heads,
        has_past,
        ..Default::default()
    })
}

#[test]
fn attention_flops_from_q_and_k() {
    // B=2, H=8, Sq=16, T=Sk=32, D=64: 4·B·H·Sq·T·D + 5·B·H·Sq·T.
    let (b, h, sq, t, d) = (2u64, 8, 16, 32, 64);
    let want = 4 * b * h * sq * t * d + 5 * b * h * sq * t;
    assert_eq!(want, 2_138_112);
    let q: &[usize] = &[2, 8, 16, 64];
    let kv: &[usize] = &[2, 8, 32, 64];
    let y: &[usize] = &[2, 8, 16, 64];
    let op = attention(None, None, false);
    assert_eq!(op.spec().flops(&[q, kv, kv], &[y]), want);
    // The same as 3-D [B, S, H·D] inputs with the heads as attributes.
    let op3 = attention(Some(8), Some(8), false);
    let (q3, kv3): (&[usize], &[usize]) = (&[2, 16, 512], &[2, 32, 512]);
    assert_eq!(op3.spec().flops(&[q3, kv3, kv3], &[&[2, 16, 512]]), want);
    // A past of 8 positions and grouped KV heads (2): T = 8 + 24, K/V have 2 heads.
    let past: &[usize] = &[2, 2, 8, 64];
    let kv_g: &[usize] = &[2, 2, 24, 64];
    let op_p = attention(None, None, true);
    assert_eq!(op_p.spec().flops(&[q, kv_g, kv_g, past, past], &[y]), want);
}

#[test]
fn arity_messages_and_outputs() {
    assert_eq!(
        Arity::exactly(2).check(3).unwrap_err(),
        "expects 2 inputs, got 3"
    );
    assert_eq!(
        Arity::range(2, 3).check(1).unwrap_err(),
        "expects 2 to 3 inputs, got 1"
    );
    assert_eq!(
        Arity::at_least(1).check(0).unwrap_err(),
        "expects at least 1 inputs, got 0"
    );
    assert!(Arity::at_least(1).check(7).is_ok());
    let ln = OpKind::LayerNorm.sample().op;
    assert_eq!(ln.spec().required_outputs(3), 1);
    assert_eq!(OpKind::Split.sample().op.spec().required_outputs(2), 2);
}

#[test]
fn kinds_samples_and_names() {
    let mut names = HashSet::new();
    for &k in OpKind::ALL {
        let s = k.sample();
        assert_eq!(s.op.kind(), k, "sample of {k:?}");
        names.insert(s.op.name());
    }
    assert_eq!(
        names.len(),
        OpKind::ALL.len(),
        "names are distinct: {names:?}"
    );
    let m = Op::Binary(BinaryAttrs {
        kind: BinaryOp::Mod { fmod: true },
    });
    assert_eq!(m.name(), "Mod");
    assert!(m.is_elementwise());
    assert!(!OpKind::Reshape.sample().op.is_elementwise());
}

#[test]
fn bytes_of_gathers_and_slices() {
    use crate::DType::{F32, I64};
    // Gather of 6 rows of 4 from a [1000, 4] table: indices + rows read + rows written.
    let g = OpKind::Gather.sample().op;
    let bytes = g
        .spec()
        .bytes(&[(F32, &[1000, 4]), (I64, &[2, 3])], &[(F32, &[2, 3, 4])]);
    assert_eq!(bytes, 6 * 8 + 2 * 24 * 4);
    // A MatMul reads both operands and writes the output.
    let mm = OpKind::MatMul.sample().op;
    let bytes = mm
        .spec()
        .bytes(&[(F32, &[2, 3, 4]), (F32, &[4, 5])], &[(F32, &[2, 3, 5])]);
    assert_eq!(bytes, (24 + 20 + 30) * 4);
}
