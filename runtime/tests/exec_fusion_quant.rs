//! The integer GEMM of quantised products: `MatMul(Dequantize(Quantize(x)), W)` with a
//! quantised weight `W` runs as one `QuantMatMul` (bias and GELU in its epilogue), a
//! Quantize shared by two products goes once both quantise `x` themselves, a weight gathered
//! as floats is packed again, and every run
//! equals the reference executor bit for bit (its quantised products are exact integer sums
//! too). Skipped, with the reason printed, on CPUs without an integer GEMM.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{DType, Graph, Layout, Op, Quant, Tensor, TensorId, Weight, WeightData};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

const K: usize = 70;
const N: usize = 40;

fn available() -> bool {
    let ok = tessera_kernels::int8_gemm_available();
    if !ok {
        eprintln!("skipped: this CPU has no AVX-512 VNNI, quantised products run as float GEMMs");
    }
    ok
}

/// An int8 `[K, N]` weight with a scale and zero point per column (inline).
fn qweight(g: &mut Graph, name: &str) -> TensorId {
    let q: Vec<i64> = (0..K * N)
        .map(|i| ((i * 37 + 11) % 256) as i64 - 128)
        .collect();
    let s: Vec<f32> = (0..N).map(|j| 0.002 + 0.0003 * j as f32).collect();
    let z: Vec<i64> = (0..N).map(|j| (j % 7) as i64 - 3).collect();
    let inline = |name: String, t: Tensor, dtype: DType| Weight {
        perm: None,
        packed_bits: None,
        name,
        dtype,
        shape: t.shape.clone(),
        data: WeightData::Inline {
            tensor: Tensor { dtype, ..t },
        },
        quant: None,
    };
    let mut w = inline(name.into(), Tensor::i64(vec![K, N], q), DType::I8);
    w.quant = Some(Quant {
        dtype: DType::F32,
        scale: Box::new(inline(
            format!("{name}_s"),
            Tensor::f32(vec![1, N], s),
            DType::F32,
        )),
        zero_point: Some(Box::new(inline(
            format!("{name}_z"),
            Tensor::i64(vec![1, N], z),
            DType::I8,
        ))),
    });
    g.add_weight(w)
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> TensorId {
    inline_weight(g, name, Tensor::f32(vec![], vec![v]))
}

/// x [6, K] → Quantize (uint8) → Dequantize → MatMul W1 → + b → Gelu; with `shared`, a
/// second MatMul W2 reads the same Dequantize and is a second output.
fn graph(shared: bool) -> (Graph, BTreeMap<String, Tensor>, Vec<TensorId>) {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![6, K]);
    let (s, z) = (scalar(&mut g, "s", 0.02), scalar(&mut g, "z", 120.0));
    let (_, q) = node(
        &mut g,
        "q",
        Op::Quantize(QuantizeAttrs { to: DType::U8 }),
        vec![x, s, z],
        vec![6, K],
        DType::U8,
    );
    let d = f32_node(&mut g, "dq", Op::Dequantize, vec![q, s, z], vec![6, K]);
    let w1 = qweight(&mut g, "w1");
    let mm = Op::MatMul(MatMulAttrs {});
    let y = f32_node(&mut g, "mm1", mm.clone(), vec![d, w1], vec![6, N]);
    let b = inline_weight(&mut g, "b", rand_f32(&[N], 4));
    let yb = binary_node(&mut g, "bias", BinaryOp::Add, [y, b], vec![6, N]);
    let gelu = Op::Gelu(GeluAttrs {
        tanh_approximation: false,
    });
    let out = f32_node(&mut g, "gelu", gelu, vec![yb], vec![6, N]);
    g.outputs.push(out);
    let mut weights = vec![w1];
    if shared {
        let w2 = qweight(&mut g, "w2");
        let y2 = f32_node(&mut g, "mm2", mm, vec![d, w2], vec![6, N]);
        g.outputs.push(y2);
        weights.push(w2);
    }
    let mut xv = rand_f32(&[6, K], 8);
    if let tessera_ir::TensorData::F32(v) = &mut xv.data {
        // ±3 over a step of 0.02, with saturation at both ends.
        v.iter_mut().for_each(|a| *a *= 3.0);
    }
    (g, BTreeMap::from([("x".to_string(), xv)]), weights)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Runs `plan`, checks it equals the reference bit for bit, and returns the fused kernels
/// rank 0 ran (by kind) and the weight bytes it held.
fn run_and_compare(
    plan: &tessera_ir::plan::Plan,
    inputs: &BTreeMap<String, Tensor>,
) -> (BTreeMap<&'static str, usize>, u64) {
    let want = reference(plan, inputs);
    let opts = RunOptions::default();
    let (got, stats) = run_plan(plan, &WeightStore::with_dir("."), inputs, &opts)
        .unwrap_or_else(|e| panic!("run_plan: {e}"));
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(bits(a), bits(b), "the run differs from the reference");
    }
    (stats.ranks[0].fused.clone(), stats.ranks[0].weight_bytes)
}

#[test]
fn a_quantised_linear_with_bias_and_gelu_is_one_integer_gemm() {
    if !available() {
        return;
    }
    let (g, inputs, _) = graph(false);
    let (fused, weight_bytes) = run_and_compare(&single_rank_plan(g), &inputs);
    assert_eq!(fused, BTreeMap::from([("fused QuantMatMul+Bias+Gelu", 1)]));
    // The weight is held packed: 72 rows (K rounded up to 4) by 48 columns (N rounded up
    // to 16) of bytes and 3 per-column vectors of 48 (4,032 bytes), not 70·40 floats
    // (11,200); the scale, zero point and bias add 4 + 4 + 160.
    assert_eq!(weight_bytes, 4032 + 168);
}

#[test]
fn a_shared_quantize_goes_once_both_products_quantise_x() {
    if !available() {
        return;
    }
    let (g, inputs, _) = graph(true);
    let (fused, _) = run_and_compare(&single_rank_plan(g), &inputs);
    assert_eq!(
        fused,
        BTreeMap::from([("fused QuantMatMul+Bias+Gelu", 1), ("fused QuantMatMul", 1)])
    );
}

/// Two ranks, each loading half of W1's columns and all-gathering the dequantised floats,
/// the activation split by rows: the gathered weight is packed again on every call.
#[test]
fn a_weight_gathered_as_floats_is_packed_again() {
    if !available() {
        return;
    }
    let (g, inputs, weights) = graph(false);
    let nodes: Vec<_> = g.node_ids().collect();
    let tensors: Vec<_> = nodes.iter().map(|&n| g.node(n).outputs[0]).collect();
    let ins: Vec<_> = nodes.iter().map(|&n| g.node(n).inputs.clone()).collect();
    let mut b = PlanBuilder::new(g, 2);
    let rows = Layout::Split(0);
    let vx = b.value(ins[0][0], rows);
    b.input(ins[0][0], Some((0, 6)), vx);
    let (vs, vz) = (
        b.value(ins[0][1], Layout::Replicated),
        b.value(ins[0][2], Layout::Replicated),
    );
    b.load_weight(ins[0][1], None, vs);
    b.load_weight(ins[0][2], None, vz);
    let vq = b.value(tensors[0], rows);
    b.compute(nodes[0], &[vx, vs, vz], vq);
    let vd = b.value(tensors[1], rows);
    b.compute(nodes[1], &[vq, vs, vz], vd);
    let vw_half = b.value(weights[0], Layout::Split(1));
    b.load_weight(weights[0], Some((1, N)), vw_half);
    let vw = b.value(weights[0], Layout::Replicated);
    b.collective(CollectiveKind::AllGather, Some(1), None, vw_half, vw);
    let vy = b.value(tensors[2], rows);
    b.compute(nodes[2], &[vd, vw], vy);
    let vbias = b.value(ins[3][1], Layout::Replicated);
    b.load_weight(ins[3][1], None, vbias);
    let vyb = b.value(tensors[3], rows);
    b.compute(nodes[3], &[vy, vbias], vyb);
    let vg = b.value(tensors[4], rows);
    b.compute(nodes[4], &[vyb], vg);
    let out = b.value(tensors[4], Layout::Replicated);
    b.collective(CollectiveKind::AllGather, Some(0), None, vg, out);
    b.plan.outputs.push(out);
    let (fused, _) = run_and_compare(&b.plan, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused QuantMatMul+Bias+Gelu", 1)]));
}

/// Two ranks quantise their rows of x and all-gather the integers: the product reads the
/// gathered integer value (no Quantize on the rank that could give it x).
#[test]
fn gathered_integers_are_read_as_they_are() {
    if !available() {
        return;
    }
    let (g, inputs, weights) = graph(false);
    let nodes: Vec<_> = g.node_ids().collect();
    let tensors: Vec<_> = nodes.iter().map(|&n| g.node(n).outputs[0]).collect();
    let ins: Vec<_> = nodes.iter().map(|&n| g.node(n).inputs.clone()).collect();
    let mut b = PlanBuilder::new(g, 2);
    let (rows, whole) = (Layout::Split(0), Layout::Replicated);
    let vx = b.value(ins[0][0], rows);
    b.input(ins[0][0], Some((0, 6)), vx);
    let (vs, vz) = (b.value(ins[0][1], whole), b.value(ins[0][2], whole));
    b.load_weight(ins[0][1], None, vs);
    b.load_weight(ins[0][2], None, vz);
    let vq_rows = b.value(tensors[0], rows);
    b.compute(nodes[0], &[vx, vs, vz], vq_rows);
    let vq = b.value(tensors[0], whole);
    b.collective(CollectiveKind::AllGather, Some(0), None, vq_rows, vq);
    let vd = b.value(tensors[1], whole);
    b.compute(nodes[1], &[vq, vs, vz], vd);
    let vw = b.value(weights[0], whole);
    b.load_weight(weights[0], None, vw);
    let vy = b.value(tensors[2], whole);
    b.compute(nodes[2], &[vd, vw], vy);
    let vbias = b.value(ins[3][1], whole);
    b.load_weight(ins[3][1], None, vbias);
    let vyb = b.value(tensors[3], whole);
    b.compute(nodes[3], &[vy, vbias], vyb);
    let vg = b.value(tensors[4], whole);
    b.compute(nodes[4], &[vyb], vg);
    b.plan.outputs.push(vg);
    let (fused, _) = run_and_compare(&b.plan, &inputs);
    assert_eq!(fused, BTreeMap::from([("fused QuantMatMul+Bias+Gelu", 1)]));
}
