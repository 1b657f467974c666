//! GELU spellings become the canonical GELU op: the tanh form as BLOOM factors it
//! (`0.79788456·x·(1 + 0.044715·x·x)`), operands in the exporter's order.
mod partition_common;

use partition_common::{canon_ops, B};
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::DType;

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
        BTreeMap::from([("Gelu".to_string(), 1)])
    );
    // Another constant is not GELU: the graph keeps its ops.
    let ops = canon_ops(&factored_tanh_gelu(0.7));
    assert!(!ops.contains_key("Gelu"), "{ops:?}");
    assert!(ops.contains_key("Tanh"), "{ops:?}");
}
