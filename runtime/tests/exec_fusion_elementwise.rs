//! The fusion pass's generic elementwise trees: which steps join a tree (intermediates read
//! once, exactly f32), and that the fused run equals the reference executor's op-by-op run
//! bit for bit, with broadcasting, Where, Cast and odd lengths.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorId};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// Runs the graph as a one-device plan, checks it equals the reference executor bit for bit
/// and returns the fused kernels it ran (by kind) and the plan steps they replaced.
fn run(g: Graph, inputs: &BTreeMap<String, Tensor>) -> (BTreeMap<&'static str, usize>, usize) {
    let plan = single_rank_plan(g);
    let want = reference(&plan, inputs);
    let (got, stats) = run_plan(
        &plan,
        &WeightStore::with_dir("."),
        inputs,
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("run_plan: {e}"));
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a.shape, b.shape);
        let bits =
            |t: &Tensor| -> Vec<u32> { t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(a), bits(b), "fused run differs from the reference");
    }
    (stats.ranks[0].fused.clone(), stats.ranks[0].fused_steps)
}

fn unary(g: &mut Graph, name: &str, kind: UnaryOp, x: TensorId, s: &[usize]) -> TensorId {
    f32_node(g, name, Op::Unary(UnaryAttrs { kind }), vec![x], s.to_vec())
}

/// The tanh-form GELU spelled out as an exporter writes it, on `x + b` (b broadcast over
/// rows), a causal-style `Where` with a bool condition broadcast over the batch, and a
/// padding mask cast from int64: `Where(cond, gelu(x + b), fill) · Cast(mask)`; the row has
/// 1031 elements (two 512-element chunks and an odd tail). `share` also reads the tanh
/// outside the tree (a ReLU of it is a second output), which must then stay a tensor.
fn gelu_where_cast(share: bool) -> (Graph, BTreeMap<String, Tensor>) {
    let (bsz, n) = (3, 1031);
    let s = [bsz, n];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, s.to_vec());
    let cond = g.add_input("cond", DType::Bool, vec![1, n]);
    let mask = g.add_input("mask", DType::I64, vec![bsz, 1]);
    let b = inline_weight(&mut g, "b", rand_f32(&[n], 1));
    let c =
        |g: &mut Graph, name: &str, v: f32| inline_weight(g, name, Tensor::f32(vec![], vec![v]));
    let (half, one, k, three, fill) = (
        c(&mut g, "half", 0.5),
        c(&mut g, "one", 1.0),
        c(&mut g, "k", 0.044715),
        c(&mut g, "three", 3.0),
        c(&mut g, "fill", -1e4),
    );
    let root2pi = c(&mut g, "root2pi", (2.0f32 / std::f32::consts::PI).sqrt());
    let xb = binary_node(&mut g, "xb", BinaryOp::Add, [x, b], s.to_vec());
    let cube = binary_node(&mut g, "cube", BinaryOp::Pow, [xb, three], s.to_vec());
    let kc = binary_node(&mut g, "kc", BinaryOp::Mul, [k, cube], s.to_vec());
    let inner = binary_node(&mut g, "inner", BinaryOp::Add, [xb, kc], s.to_vec());
    let scaled = binary_node(
        &mut g,
        "scaled",
        BinaryOp::Mul,
        [inner, root2pi],
        s.to_vec(),
    );
    let th = unary(&mut g, "tanh", UnaryOp::Tanh, scaled, &s);
    let onep = binary_node(&mut g, "onep", BinaryOp::Add, [th, one], s.to_vec());
    let hx = binary_node(&mut g, "hx", BinaryOp::Mul, [half, xb], s.to_vec());
    let gelu = binary_node(&mut g, "gelu", BinaryOp::Mul, [hx, onep], s.to_vec());
    let w = f32_node(
        &mut g,
        "where",
        Op::Where,
        vec![cond, gelu, fill],
        s.to_vec(),
    );
    let cast = Op::Cast(CastAttrs { to: DType::F32 });
    let m = f32_node(&mut g, "cast", cast, vec![mask], vec![bsz, 1]);
    let y = binary_node(&mut g, "masked", BinaryOp::Mul, [w, m], s.to_vec());
    g.outputs.push(y);
    if share {
        let r = unary(&mut g, "relu", UnaryOp::Relu, th, &s);
        g.outputs.push(r);
    }
    let inputs = BTreeMap::from([
        ("x".to_string(), rand_f32(&s, 2)),
        (
            "cond".to_string(),
            Tensor::bool(vec![1, n], (0..n).map(|i| i % 7 != 3).collect()),
        ),
        ("mask".to_string(), Tensor::i64(vec![bsz, 1], vec![1, 0, 1])),
    ]);
    (g, inputs)
}

#[test]
fn a_tree_of_elementwise_ops_runs_as_one_kernel() {
    let (g, inputs) = gelu_where_cast(false);
    let (fused, steps) = run(g, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused Elementwise", 1)]));
    // cube, kc, inner, scaled, tanh, onep, hx, gelu, where, cast, masked; `x + b` is read
    // three times by the tree (cube, inner, hx), so it is computed once, as a step.
    assert_eq!(steps, 11);
}

#[test]
fn a_value_read_twice_stays_a_tensor() {
    let (g, inputs) = gelu_where_cast(true);
    let (fused, steps) = run(g, &inputs);
    // The tanh is read by the GELU tree and by the ReLU: the tree splits there into one
    // rooted at the tanh (cube, kc, inner, scaled, tanh) and one reading it (onep, hx,
    // gelu, where, cast, masked); the ReLU alone is not worth a kernel.
    assert_eq!(fused, BTreeMap::from([("fused Elementwise", 2)]));
    assert_eq!(steps, 11);
}

/// Half-precision values round on every op: a tree through an f16 value is not fused there.
#[test]
fn half_precision_values_are_not_fused() {
    let s = [4, 9];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, s.to_vec());
    let to16 = Op::Cast(CastAttrs { to: DType::F16 });
    let (_, h) = node(&mut g, "to16", to16, vec![x], s.to_vec(), DType::F16);
    let (_, e) = node(
        &mut g,
        "exp16",
        Op::Unary(UnaryAttrs { kind: UnaryOp::Exp }),
        vec![h],
        s.to_vec(),
        DType::F16,
    );
    let to32 = Op::Cast(CastAttrs { to: DType::F32 });
    let y = f32_node(&mut g, "to32", to32, vec![e], s.to_vec());
    let z = unary(&mut g, "neg", UnaryOp::Neg, y, &s);
    g.outputs.push(z);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&s, 3))]);
    let (fused, _) = run(g, &inputs);
    assert_eq!(fused, BTreeMap::new());
}

/// A QuantizeLinear / DequantizeLinear pair as the importer lowers it (`x / s`, Round, `+ z`,
/// Clip to uint8's range, Cast to uint8, Cast back, `− z`, `· s`), then HardSwish: one
/// kernel, the uint8 value never stored, equal to the op-by-op run bit for bit — with
/// values outside the uint8 range (the Clip is on a separate path) and a second Cast
/// through int8 of values that wrap.
#[test]
fn fake_quantisation_and_hard_swish_run_as_one_kernel() {
    let s = [5, 1031];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, s.to_vec());
    let c =
        |g: &mut Graph, name: &str, v: f32| inline_weight(g, name, Tensor::f32(vec![], vec![v]));
    let (scale, zero) = (c(&mut g, "s", 0.01), c(&mut g, "z", 128.0));
    let cast = |to| Op::Cast(CastAttrs { to });
    let q = binary_node(&mut g, "q", BinaryOp::Div, [x, scale], s.to_vec());
    let r = unary(&mut g, "round", UnaryOp::Round, q, &s);
    let qz = binary_node(&mut g, "qz", BinaryOp::Add, [r, zero], s.to_vec());
    let clip = Op::Clip(ClipAttrs {
        min: Some(0.0),
        max: Some(255.0),
    });
    let cl = f32_node(&mut g, "clip", clip, vec![qz], s.to_vec());
    let (_, u) = node(
        &mut g,
        "to_u8",
        cast(DType::U8),
        vec![cl],
        s.to_vec(),
        DType::U8,
    );
    let back = f32_node(&mut g, "to_f32", cast(DType::F32), vec![u], s.to_vec());
    let d = binary_node(&mut g, "d", BinaryOp::Sub, [back, zero], s.to_vec());
    let y = binary_node(&mut g, "y", BinaryOp::Mul, [d, scale], s.to_vec());
    let hs = Op::HardSigmoid(HardSigmoidAttrs {
        alpha: 1.0 / 6.0,
        beta: 0.5,
        swish: true,
    });
    let h = f32_node(&mut g, "hswish", hs, vec![y], s.to_vec());
    // Unclipped: x / s spans ±300 and more, which int8 wraps.
    let (_, w) = node(
        &mut g,
        "to_i8",
        cast(DType::I8),
        vec![q],
        s.to_vec(),
        DType::I8,
    );
    let wb = f32_node(&mut g, "i8_f32", cast(DType::F32), vec![w], s.to_vec());
    let out = binary_node(&mut g, "out", BinaryOp::Add, [h, wb], s.to_vec());
    g.outputs.push(out);
    let mut xv = rand_f32(&s, 7);
    if let tessera_ir::TensorData::F32(v) = &mut xv.data {
        v.iter_mut().for_each(|a| *a *= 4.0);
    }
    let inputs = BTreeMap::from([("x".to_string(), xv)]);
    let (fused, steps) = run(g, &inputs);
    // `x / s` is read twice (Round and the int8 Cast): a tensor; the rest is one tree.
    assert_eq!(fused, BTreeMap::from([("fused Elementwise", 1)]));
    assert_eq!(steps, 11);
}

/// The canonical ops of a QuantizeLinear → DequantizeLinear pair join the tree, the uint8
/// value never stored: with equal scale and zero point (separate constants, as the compiler
/// gives each reader its own) as one instruction, with another scale (canonicalisation folds
/// a following constant factor into it) as the quantisation and then the dequantisation.
#[test]
fn a_quantize_dequantize_pair_joins_the_tree() {
    let s = [5, 1031];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, s.to_vec());
    let c =
        |g: &mut Graph, name: &str, v: f32| inline_weight(g, name, Tensor::f32(vec![], vec![v]));
    let (s1, z1) = (c(&mut g, "s1", 0.01), c(&mut g, "z1", 128.0));
    let (s2, z2) = (c(&mut g, "s2", 0.01), c(&mut g, "z2", 128.0));
    let s3 = c(&mut g, "s3", 0.02);
    let quantize = Op::Quantize(QuantizeAttrs { to: DType::U8 });
    let (_, q1) = node(
        &mut g,
        "q1",
        quantize.clone(),
        vec![x, s1, z1],
        s.to_vec(),
        DType::U8,
    );
    let y1 = f32_node(&mut g, "dq1", Op::Dequantize, vec![q1, s2, z2], s.to_vec());
    let hs = Op::HardSigmoid(HardSigmoidAttrs {
        alpha: 1.0 / 6.0,
        beta: 0.5,
        swish: true,
    });
    let h = f32_node(&mut g, "hswish", hs, vec![y1], s.to_vec());
    let (_, q2) = node(
        &mut g,
        "q2",
        quantize,
        vec![x, s1, z1],
        s.to_vec(),
        DType::U8,
    );
    let y2 = f32_node(&mut g, "dq2", Op::Dequantize, vec![q2, s3, z1], s.to_vec());
    let out = binary_node(&mut g, "out", BinaryOp::Add, [h, y2], s.to_vec());
    g.outputs.push(out);
    let mut xv = rand_f32(&s, 9);
    if let tessera_ir::TensorData::F32(v) = &mut xv.data {
        // ±4 over a step of 0.01: most values saturate at 0 or 255.
        v.iter_mut().for_each(|a| *a *= 4.0);
    }
    let inputs = BTreeMap::from([("x".to_string(), xv)]);
    let (fused, steps) = run(g, &inputs);
    // One tree: q1, dq1, hswish, q2, dq2, out.
    assert_eq!(fused, BTreeMap::from([("fused Elementwise", 1)]));
    assert_eq!(steps, 6);
}

/// A Quantize of an elementwise tree ends the fused program (a QDQ model's activation
/// quantised before a data movement): `Quantize(x·w + b)` to int8 and uint8 runs as one
/// program whose result is the integer tensor, equal to the reference executor's op-by-op
/// integers, with values pushed past both ends of the range and a NaN.
#[test]
fn a_quantize_ends_an_elementwise_program_with_its_integers() {
    for to in [DType::I8, DType::U8] {
        let s = [3usize, 1031];
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, s.to_vec());
        let w = inline_weight(&mut g, "w", rand_f32(&[1031], 2));
        let b = inline_weight(&mut g, "b", rand_f32(&[1031], 3));
        let scale = inline_weight(&mut g, "scale", Tensor::f32(vec![], vec![0.004]));
        // The canonical Quantize reads its zero point as f32 (an integral value).
        let z = if to == DType::U8 { 128.0 } else { -3.0 };
        let zp = inline_weight(&mut g, "zp", Tensor::f32(vec![], vec![z]));
        let xw = binary_node(&mut g, "xw", BinaryOp::Mul, [x, w], s.to_vec());
        let y = binary_node(&mut g, "y", BinaryOp::Add, [xw, b], s.to_vec());
        let (_, q) = node(
            &mut g,
            "q",
            Op::Quantize(QuantizeAttrs { to }),
            vec![y, scale, zp],
            s.to_vec(),
            to,
        );
        g.outputs.push(q);
        let mut xv = rand_f32(&s, 4);
        if let tessera_ir::TensorData::F32(v) = &mut xv.data {
            v[0] = 50.0;
            v[1] = -50.0;
            v[2] = f32::NAN;
        }
        let inputs = BTreeMap::from([("x".to_string(), xv)]);
        let plan = single_rank_plan(g);
        let want = reference(&plan, &inputs);
        let (got, stats) = run_plan(
            &plan,
            &WeightStore::with_dir("."),
            &inputs,
            &RunOptions::default(),
        )
        .unwrap_or_else(|e| panic!("run_plan: {e}"));
        assert_eq!(got[0].dtype, to);
        assert_eq!(got[0].data, want[0].data, "{to}: fused integers differ");
        assert_eq!(
            stats.ranks[0].fused.get("fused Elementwise"),
            Some(&1),
            "{to}: {:?}",
            stats.ranks[0].fused
        );
        assert_eq!(stats.ranks[0].fused_steps, 3, "{to}");
    }
}
