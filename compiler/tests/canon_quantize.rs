//! QuantizeLinear / DequantizeLinear of activations, as the importer writes them (Div,
//! Round, Add, Clip, Cast; Cast, Sub, Mul), become the canonical Quantize and Dequantize
//! ops: eight nodes per pair become two, and the integer value stays in the graph (a plan
//! may move it at one byte per element).
mod partition_common;

use partition_common::{canon_ops, canon_ops_with, B};
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Op, TensorId};

/// QuantizeLinear to `to` with range `[lo, hi]` (and a zero point when given), then
/// DequantizeLinear with the same parameters, each with its own constants (as the importer
/// gives each node its own).
fn qdq(b: &mut B, x: TensorId, to: DType, lo: f32, hi: f32, zp: Option<f32>) -> TensorId {
    let s1 = b.konst("s1", 0.05);
    let q = b.bin(BinaryOp::Div, x, s1);
    let mut r = b.un(UnaryOp::Round, q);
    if let Some(z) = zp {
        let z1 = b.konst("z1", z);
        r = b.bin(BinaryOp::Add, r, z1);
    }
    let c = b.op(
        Op::Clip(ClipAttrs {
            min: Some(lo),
            max: Some(hi),
        }),
        &[r],
    );
    let i = b.op(Op::Cast(CastAttrs { to }), &[c]);
    let mut f = b.op(Op::Cast(CastAttrs { to: DType::F32 }), &[i]);
    if let Some(z) = zp {
        let z2 = b.konst("z2", z);
        f = b.bin(BinaryOp::Sub, f, z2);
    }
    let s2 = b.konst("s2", 0.05);
    b.bin(BinaryOp::Mul, f, s2)
}

fn pair(to: DType, lo: f32, hi: f32, zp: Option<f32>) -> BTreeMap<String, usize> {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 8, 16]);
    let y = qdq(&mut b, x, to, lo, hi, zp);
    b.g.outputs.push(y);
    canon_ops(&b)
}

fn quantize_dequantize() -> BTreeMap<String, usize> {
    BTreeMap::from([("Quantize".to_string(), 1), ("Dequantize".to_string(), 1)])
}

#[test]
fn a_quantize_dequantize_pair_becomes_two_canonical_ops() {
    assert_eq!(
        pair(DType::U8, 0.0, 255.0, Some(128.0)),
        quantize_dequantize()
    );
    assert_eq!(
        pair(DType::I8, -128.0, 127.0, Some(-3.0)),
        quantize_dequantize()
    );
    assert_eq!(pair(DType::I8, -128.0, 127.0, None), quantize_dequantize());
    assert_eq!(
        pair(DType::I16, -32768.0, 32767.0, Some(0.0)),
        quantize_dequantize()
    );
}

#[test]
fn a_clip_narrower_than_the_type_or_a_fractional_zero_point_is_not_quantize() {
    // Clip to [0, 200] then uint8: not QuantizeLinear's saturation.
    let ops = pair(DType::U8, 0.0, 200.0, Some(128.0));
    assert!(!ops.contains_key("Quantize"), "{ops:?}");
    assert!(ops.contains_key("Clip"), "{ops:?}");
    // A zero point of 0.5 makes round(x/s) + z fractional, which the Cast truncates.
    let ops = pair(DType::U8, 0.0, 255.0, Some(0.5));
    assert!(!ops.contains_key("Quantize"), "{ops:?}");
}

#[test]
fn an_int8_weight_behind_a_cast_stays_a_quantised_weight_leaf() {
    // Cast(int8 weight) · scale is the weight-only form (a qweight leaf), not Dequantize.
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 16]);
    let w = b.weight("w", &[16, 8]);
    if let Some(wt) = b.g.weights.get_mut(&w) {
        wt.dtype = DType::I8;
    }
    b.g.tensors[w.index()].dtype = DType::I8;
    let wf = b.op(Op::Cast(CastAttrs { to: DType::F32 }), &[w]);
    let s = b.konst("s", 0.02);
    let wd = b.bin(BinaryOp::Mul, wf, s);
    let y = b.matmul(x, wd);
    b.g.outputs.push(y);
    let ops = canon_ops(&b);
    assert!(!ops.contains_key("Dequantize"), "{ops:?}");
    assert_eq!(ops.get("MatMul"), Some(&1), "{ops:?}");
}

/// onnxruntime's dynamic quantisation as the importer lowers it: DynamicQuantizeLinear (the
/// range of x, a computed scale and zero point, Div/Round/Add/Clip/Cast), MatMulInteger
/// (Cast and Sub of the zero point, a MatMul of an int8 weight stored with scale 1, the
/// Cast to int32) and the Cast back, times the product of the two scales (`per_column`:
/// one weight scale per column).
fn dynamic_linear(per_column: bool) -> BTreeMap<String, usize> {
    let (k, n) = (16, 8);
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 4, k]);
    let f32c = |b: &mut B, t| b.op(Op::Cast(CastAttrs { to: DType::F32 }), &[t]);
    let reduce = |b: &mut B, kind, t| {
        let r = ReduceAttrs {
            kind,
            axes: vec![0, 1, 2],
            keepdims: false,
        };
        b.op(Op::Reduce(r), &[t])
    };
    let clip = |b: &mut B, t| {
        let c = ClipAttrs {
            min: Some(0.0),
            max: Some(255.0),
        };
        b.op(Op::Clip(c), &[t])
    };
    let (hi, lo) = (
        reduce(&mut b, ReduceKind::Max, x),
        reduce(&mut b, ReduceKind::Min, x),
    );
    let zero = b.konst("zero", 0.0);
    let (hi, lo) = (
        b.bin(BinaryOp::Max, hi, zero),
        b.bin(BinaryOp::Min, lo, zero),
    );
    let range = b.bin(BinaryOp::Sub, hi, lo);
    let k255 = b.konst("k255", 255.0);
    let scale = b.bin(BinaryOp::Div, range, k255);
    let lo_q = b.bin(BinaryOp::Div, lo, scale);
    let zp = b.un(UnaryOp::Neg, lo_q);
    let zp = clip(&mut b, zp);
    let zp = b.un(UnaryOp::Round, zp);
    let q = b.bin(BinaryOp::Div, x, scale);
    let q = b.un(UnaryOp::Round, q);
    let q = b.bin(BinaryOp::Add, q, zp);
    let q = clip(&mut b, q);
    let q = b.op(Op::Cast(CastAttrs { to: DType::U8 }), &[q]);
    let zp8 = b.op(Op::Cast(CastAttrs { to: DType::U8 }), &[zp]);
    // MatMulInteger.
    let (qf, zf) = (f32c(&mut b, q), f32c(&mut b, zp8));
    let a = b.bin(BinaryOp::Sub, qf, zf);
    let w = b.weight("w", &[k, n]);
    let inline =
        |name: &str, t: tessera_ir::Tensor| Box::new(tessera_ir::Weight::constant(name, t));
    if let Some(wt) = b.g.weights.get_mut(&w) {
        wt.dtype = DType::I8;
        wt.quant = Some(tessera_ir::Quant {
            dtype: DType::F32,
            scale: inline("w_one", tessera_ir::Tensor::f32(vec![1, 1], vec![1.0])),
            zero_point: None,
        });
    }
    let y = b.matmul(a, w);
    let y = b.op(Op::Cast(CastAttrs { to: DType::I32 }), &[y]);
    let y = f32c(&mut b, y);
    let ws = if per_column {
        b.weight("ws", &[n])
    } else {
        b.konst("ws", 0.004)
    };
    let s = b.bin(BinaryOp::Mul, scale, ws);
    let y = b.bin(BinaryOp::Mul, y, s);
    b.g.outputs.push(y);
    canon_ops(&b)
}

#[test]
fn dynamic_quantisation_becomes_a_quantised_product() {
    for per_column in [false, true] {
        let ops = dynamic_linear(per_column);
        // Quantize, Dequantize, and a MatMul of the weight now quantised with its own scale.
        for op in ["Quantize", "Dequantize", "MatMul"] {
            assert_eq!(
                ops.get(op),
                Some(&1),
                "{op} (per column {per_column}): {ops:?}"
            );
        }
        // Of the six Casts only the zero point's (to uint8 and back, one element) remain: no
        // round trip through int32, and the product's scale is Dequantize's.
        assert_eq!(
            ops.get("Cast"),
            Some(&2),
            "per column {per_column}: {ops:?}"
        );
    }
}

/// QDQ models quantise again after a data movement with the scale and zero point the value
/// came with: the phase-2 rules of examples/rules/requantize.canon (a user's `--rules` file)
/// move the Reshape or Transpose onto the integers and drop the second pair, so one Quantize
/// and one Dequantize are left. With another scale, or without the file, the second pair
/// stays.
#[test]
fn a_pair_repeated_after_a_data_movement_is_dropped() {
    for movement in ["reshape", "transpose"] {
        for (scale, pairs) in [(0.05, 1), (0.07, 2)] {
            let mut b = B::new();
            let x = b.input("x", DType::F32, &[2, 8, 16]);
            let y = qdq(&mut b, x, DType::I8, -128.0, 127.0, Some(-3.0));
            let moved = match movement {
                "reshape" => b.reshape(y, &[2, 128]),
                _ => b.transpose(y, &[0, 2, 1]),
            };
            // The second pair: scale 0.05 (the first pair's) or another one.
            let s1 = b.konst("s3", scale);
            let q = b.bin(BinaryOp::Div, moved, s1);
            let r = b.un(UnaryOp::Round, q);
            let z1 = b.konst("z3", -3.0);
            let r = b.bin(BinaryOp::Add, r, z1);
            let c = b.op(
                Op::Clip(ClipAttrs {
                    min: Some(-128.0),
                    max: Some(127.0),
                }),
                &[r],
            );
            let i = b.op(Op::Cast(CastAttrs { to: DType::I8 }), &[c]);
            let f = b.op(Op::Cast(CastAttrs { to: DType::F32 }), &[i]);
            let z2 = b.konst("z4", -3.0);
            let f = b.bin(BinaryOp::Sub, f, z2);
            let s2 = b.konst("s4", scale);
            let out = b.bin(BinaryOp::Mul, f, s2);
            b.g.outputs.push(out);
            assert_eq!(
                canon_ops(&b).get("Quantize"),
                Some(&2),
                "built-in rules alone"
            );
            let ops = canon_ops_with(&b, &requantize_rules());
            let label = format!("{movement}, scale {scale}: {ops:?}");
            assert_eq!(ops.get("Quantize"), Some(&pairs), "{label}");
            assert_eq!(ops.get("Dequantize"), Some(&pairs), "{label}");
            let moves = if movement == "reshape" {
                "Reshape"
            } else {
                "Transpose"
            };
            assert_eq!(ops.get(moves), Some(&1), "{label}");
        }
    }
}

/// The built-in rules plus the phase-2 example file.
fn requantize_rules() -> Vec<tessera_compiler::canon::CanonRule> {
    let text = include_str!("../../examples/rules/requantize.canon");
    let extra = tessera_compiler::canon::parse_rules(text, "requantize.canon").unwrap();
    assert!(extra.iter().all(|r| r.phase == 2));
    let mut rules = tessera_compiler::canon::builtin();
    rules.extend(extra);
    rules
}
