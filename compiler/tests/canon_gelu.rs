//! GELU spellings become the canonical GELU op: the tanh form as BLOOM factors it
//! (`0.79788456·x·(1 + 0.044715·x·x)`), operands in the exporter's order.
mod partition_common;

use partition_common::B;
use std::collections::BTreeMap;
use tessera_compiler::canon::{builtin, canonicalize, CanonLimits};
use tessera_ir::op::*;
use tessera_ir::{DType, WeightData};

/// Ops after canonicalisation (the inline scalars given as the constants they are), by name.
fn canon_ops(b: &B) -> Vec<(String, usize)> {
    let consts: BTreeMap<_, _> =
        b.g.weights
            .iter()
            .filter_map(|(t, w)| match &w.data {
                WeightData::Inline { tensor } => Some((*t, tensor.clone())),
                _ => None,
            })
            .collect();
    let (_, r) = canonicalize(&b.g, &consts, &builtin(), &CanonLimits::default());
    r.ops_after.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// torch's `x * 0.5 * (1.0 + tanh(s * x * (1 + 0.044715 * x * x)))` (BLOOM: s = 0.79788456).
fn factored_tanh_gelu(s: f32) -> B {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 8, 16]);
    let half = b.konst("half", 0.5);
    let s = b.konst("s", s);
    let k = b.konst("k", 0.044715);
    let one = b.konst("one", 1.0);
    let one2 = b.konst("one2", 1.0);
    let xh = b.bin(BinaryOp::Mul, x, half);
    let sx = b.bin(BinaryOp::Mul, s, x);
    let kx = b.bin(BinaryOp::Mul, k, x);
    let kxx = b.bin(BinaryOp::Mul, kx, x);
    let inner = b.bin(BinaryOp::Add, one2, kxx);
    let arg = b.bin(BinaryOp::Mul, sx, inner);
    let t = b.un(UnaryOp::Tanh, arg);
    let a = b.bin(BinaryOp::Add, one, t);
    let y = b.bin(BinaryOp::Mul, xh, a);
    b.g.outputs.push(y);
    b
}

#[test]
fn blooms_factored_tanh_gelu_is_gelu() {
    assert_eq!(
        canon_ops(&factored_tanh_gelu(0.797_884_6)),
        vec![("Gelu".to_string(), 1)]
    );
    // Another constant is not GELU: the graph keeps its ops.
    let ops = canon_ops(&factored_tanh_gelu(0.7));
    assert!(!ops.iter().any(|(k, _)| k == "Gelu"), "{ops:?}");
    assert!(ops.iter().any(|(k, _)| k == "Tanh"), "{ops:?}");
}
