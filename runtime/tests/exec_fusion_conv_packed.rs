//! Convs the direct kernel serves run over weights packed when the program is prepared: on
//! 3×3 maps of two images, a 3×3 Conv with or without an epilogue becomes one fused item that also replaces its
//! weight's load step, matching the reference executor to f32 rounding (the direct kernel
//! sums in another order than im2col); a depthwise Conv and a Conv whose weight another op
//! also reads keep their paths and their load steps, and a 1×1 Conv over few positions is
//! packed where the kernel's rule (`direct_suits`) serves it.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, TensorId, Weight, WeightData};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// A 2-D Conv of a `k`×`k` kernel, stride 1, padded to keep the map's size.
fn attrs(k: usize, group: usize) -> ConvAttrs {
    ConvAttrs {
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![k / 2; 4],
        group,
        depthwise: false,
    }
}

fn conv(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: TensorId,
    out: Vec<usize>,
    k: usize,
    group: usize,
) -> TensorId {
    f32_node(g, name, Op::Conv(attrs(k, group)), vec![x, w], out)
}

#[test]
fn multi_tap_convs_run_over_packed_weights() {
    if !tessera_kernels::direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    let xs = vec![2, 8, 3, 3];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, xs.clone());
    // Packed: a 3×3 Conv + Relu, then a bare grouped 3×3 Conv.
    let w1 = inline_weight(&mut g, "w1", rand_f32(&[60, 8, 3, 3], 1));
    let c1 = conv(&mut g, "c1", x, w1, vec![2, 60, 3, 3], 3, 1);
    let r1 = f32_node(
        &mut g,
        "relu",
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Relu,
        }),
        vec![c1],
        vec![2, 60, 3, 3],
    );
    let w2 = inline_weight(&mut g, "w2", rand_f32(&[40, 30, 3, 3], 2));
    let c2 = conv(&mut g, "c2", r1, w2, vec![2, 40, 3, 3], 3, 2);
    // Not packed: a depthwise Conv and two Convs sharing one weight; a 1×1 Conv of 40
    // channels over 18 positions where the kernel's own rule says so (on AVX2 it serves it).
    let w3 = inline_weight(&mut g, "w3", rand_f32(&[16, 40, 1, 1], 3));
    let c3 = conv(&mut g, "c3", c2, w3, vec![2, 16, 3, 3], 1, 1);
    let w4 = inline_weight(&mut g, "w4", rand_f32(&[16, 1, 3, 3], 4));
    let c4 = conv(&mut g, "c4", c3, w4, vec![2, 16, 3, 3], 3, 16);
    let w5 = inline_weight(&mut g, "w5", rand_f32(&[16, 16, 3, 3], 5));
    let c5 = conv(&mut g, "c5", c4, w5, vec![2, 16, 3, 3], 3, 1);
    let c6 = conv(&mut g, "c6", c5, w5, vec![2, 16, 3, 3], 3, 1);
    g.outputs.push(c6);
    let plan = single_rank_plan(g);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&xs, 9))]);
    let (got, stats, want) = run_beside_reference(&plan, &inputs);
    let r = &stats.ranks[0];
    let pointwise = tessera_kernels::direct_suits(&[2, 40, 3, 3], &[16, 40, 1, 1], &attrs(1, 1));
    assert_eq!(
        r.fused,
        BTreeMap::from([
            ("fused Conv+Act", 1),
            ("prepared Conv", 1 + usize::from(pointwise))
        ])
    );
    // Conv, Relu and the load of w1; Conv and the load of w2 (and of w3: Conv and load).
    assert_eq!(r.fused_steps, 5 + 2 * usize::from(pointwise));
    let err = rel_err(&got[0], &want[0]);
    assert!(err <= 1e-5, "relative error {err}");
}

/// A weight read from a file: the copy the session preloads is released once packed (the
/// store holds it no more), and the rank counts the packed panels as its weight bytes.
#[test]
fn a_packed_file_weight_is_held_once() {
    if !tessera_kernels::direct_available() {
        println!("skipped: the direct Conv needs AVX-512F or AVX2");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let wt = rand_f32(&[60, 8, 3, 3], 1);
    let bytes: Vec<u8> = wt
        .as_f32()
        .expect("f32 values")
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("w.bin"), &bytes).expect("the weight file");
    let xs = vec![2, 8, 3, 3];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, xs.clone());
    let w = g.add_weight(Weight {
        perm: None,
        packed_bits: None,
        name: "w".into(),
        dtype: DType::F32,
        shape: wt.shape.clone(),
        data: WeightData::File {
            path: "w.bin".into(),
            offset: 0,
            length: bytes.len() as u64,
        },
        quant: None,
    });
    let y = conv(&mut g, "c", x, w, vec![2, 60, 3, 3], 3, 1);
    g.outputs.push(y);
    let plan = single_rank_plan(g);
    let store = WeightStore::with_dir(dir.path());
    // What a session does before its ranks prepare their programs.
    let weight = plan.graph.weights.values().next().expect("one weight");
    store
        .load_resident(weight, None)
        .expect("the weight decodes");
    assert_eq!(store.resident_count(), 1);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&xs, 9))]);
    let (got, stats) = run_plan(&plan, &store, &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("run_plan: {e}"));
    assert_eq!(store.resident_count(), 0, "the float copy was released");
    assert_eq!(stats.ranks[0].fused, BTreeMap::from([("prepared Conv", 1)]));
    // Two panels of 48 channels (60 padded to 96) by 8 · 9 taps.
    assert_eq!(stats.ranks[0].weight_bytes, 2 * 48 * 72 * 4);
    let want = tessera_runtime::reference::run_graph(&plan.graph, &store, &inputs)
        .unwrap_or_else(|e| panic!("reference run: {e}"));
    let err = rel_err(&got[0], &want[0]);
    assert!(err <= 1e-5, "relative error {err}");
}

/// Convs whose end taps read only padding hold their live taps only: a 1×7 Conv on a 3×3
/// map keeps 5 taps (pads 3 → 2), a 3×3 Conv of dilation 3 on a 3×3 map keeps its centre
/// (a 1×1 Conv, unpadded); both equal the reference executor, and the rank holds the kept
/// taps' bytes only (plain, or packed where the direct kernel serves the trimmed Conv).
#[test]
fn dead_end_taps_are_trimmed_from_held_weights() {
    let xs = vec![2, 8, 3, 3];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, xs.clone());
    let w1 = inline_weight(&mut g, "w1", rand_f32(&[16, 8, 1, 7], 1));
    let a1 = ConvAttrs {
        pads: vec![0, 3, 0, 3],
        ..attrs(1, 1)
    };
    let c1 = f32_node(&mut g, "c1", Op::Conv(a1), vec![x, w1], vec![2, 16, 3, 3]);
    let w2 = inline_weight(&mut g, "w2", rand_f32(&[24, 16, 3, 3], 2));
    let a2 = ConvAttrs {
        dilations: vec![3, 3],
        pads: vec![3; 4],
        ..attrs(3, 1)
    };
    let c2 = f32_node(&mut g, "c2", Op::Conv(a2), vec![c1, w2], vec![2, 24, 3, 3]);
    let relu = Op::Unary(UnaryAttrs {
        kind: UnaryOp::Relu,
    });
    let y = f32_node(&mut g, "relu", relu, vec![c2], vec![2, 24, 3, 3]);
    g.outputs.push(y);
    let plan = single_rank_plan(g);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&xs, 9))]);
    let (got, stats, want) = run_beside_reference(&plan, &inputs);
    let r = &stats.ranks[0];
    assert_eq!(
        r.fused,
        BTreeMap::from([("fused Conv+Act", 1), ("prepared Conv", 1)])
    );
    // The 1×1 Conv is packed (one panel of 48 channels) where the direct kernel serves it.
    let packed = tessera_kernels::direct_suits(&[2, 16, 3, 3], &[24, 16, 1, 1], &attrs(1, 1));
    let c2_bytes = if packed { 48 * 16 * 4 } else { 24 * 16 * 4 };
    assert_eq!(r.weight_bytes, 16 * 8 * 5 * 4 + c2_bytes);
    let err = rel_err(&got[0], &want[0]);
    assert!(err <= 1e-5, "relative error {err}");
}

/// A grouped Conv the channels-innermost kernel serves holds its weights blocked once (not
/// per call): one prepared Conv, the blocked bytes as the rank's weight bytes, equal to the
/// reference executor.
#[test]
fn grouped_conv_weights_are_blocked_once() {
    let xs = vec![2, 16, 3, 3];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, xs.clone());
    let w = inline_weight(&mut g, "w", rand_f32(&[32, 4, 3, 3], 3));
    let y = conv(&mut g, "c", x, w, vec![2, 32, 3, 3], 3, 4);
    g.outputs.push(y);
    let plan = single_rank_plan(g);
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&xs, 9))]);
    let (got, stats, want) = run_beside_reference(&plan, &inputs);
    let r = &stats.ranks[0];
    assert_eq!(r.fused, BTreeMap::from([("prepared Conv", 1)]));
    assert_eq!(r.weight_bytes, 32 * 4 * 9 * 4);
    let err = rel_err(&got[0], &want[0]);
    assert!(err <= 1e-5, "relative error {err}");
}
