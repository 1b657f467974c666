//! Convolutions: the search picks a channel split where weights dominate and a batch split
//! where activations dominate, from the same rules and cost model (the default objective:
//! modelled time, where replicated compute counts in full).
mod partition_common;
use partition_common::*;
use tessera_compiler::report::summary::PlanReport;
use tessera_ir::op::*;
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{DType, Graph, Op, TensorId};

fn conv(b: &mut B, name: &str, x: TensorId, c: usize, m: usize, k: usize) -> TensorId {
    let w = b.weight(&format!("{name}.weight"), &[m, c, k, k]);
    let bias = b.weight(&format!("{name}.bias"), &[m]);
    let p = k / 2;
    b.op(
        Op::Conv(ConvAttrs {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![p, p, p, p],
            group: 1,
            depthwise: false,
        }),
        &[x, w, bias],
    )
}

/// Conv(C→M) → ReLU → Conv(M→C) on an `n`×C×`side`×`side` input.
fn two_convs(n: usize, c: usize, m: usize, side: usize) -> Graph {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[n, c, side, side]);
    let y = conv(&mut b, "c1", x, c, m, 3);
    let y = b.op(
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Relu,
        }),
        &[y],
    );
    let z = conv(&mut b, "c2", y, m, c, 3);
    b.output(z);
    b.g
}

/// How many Convs ran with each layout signature (`inputs -> output`).
fn conv_choices(plan: &tessera_ir::plan::Plan) -> serde_json::Value {
    let r = PlanReport::new(plan, None);
    serde_json::to_value(&r.op_choices["Conv"]).expect("json")
}

#[test]
fn weights_dominate_channel_split_like_megatron() {
    // Batch 1 (no batch split at N = 2), 256 channels on a 4×4 image: 4.7 MB of weights
    // against 16 KB of activations. Conv 1 by output channels, ReLU keeps the channel split,
    // Conv 2 by input channels into a partial sum: one all-reduce of the output.
    let g = two_convs(1, 256, 256, 4);
    let p = run(&g, 2).plan;
    assert_eq!(
        conv_choices(&p),
        serde_json::json!({"R,S(0),S(0) -> S(1)": 1, "S(1),S(1),P -> P": 1}),
    );
    assert_eq!(p.collectives.len(), 1, "{:?}", p.collectives);
    assert_eq!(count(&p, CollectiveKind::AllReduce), 1);
    assert_eq!(p.collectives[0].bytes, (256 * 4 * 4 * 4) as u64);
    let notes = &p.summary.notes;
    for why in [
        "(conv-column): 1.1 MB of parameters per rank instead of 2.3 MB",
        "(conv-row)",
    ] {
        assert!(notes.iter().any(|n| n.contains(why)), "{why}: {notes:#?}");
    }
    // Each rank holds half of both weights.
    let w = (2 * 256 * 256 * 9 * 4) as u64;
    assert!(
        p.estimates[0].param_bytes <= w / 2 + 4096,
        "{:?}",
        p.estimates
    );
}

#[test]
fn activations_dominate_batch_split() {
    // Batch 8 of 3→8→3 channels on 64×64: 1 KB of weights against MBs of activations.
    // Both Convs split by batch, no collective but the final gather.
    let g = two_convs(8, 3, 8, 64);
    let p = run(&g, 2).plan;
    assert_eq!(conv_choices(&p), serde_json::json!({"S(0),R,R -> S(0)": 2}));
    let notes = &p.summary.notes;
    let batch = notes
        .iter()
        .filter(|n| n.contains("split by batch (conv-batch)"));
    assert_eq!(batch.count(), 2, "{notes:#?}");
    for kind in [
        CollectiveKind::AllReduce,
        CollectiveKind::AllToAll,
        CollectiveKind::ReduceScatter,
    ] {
        assert_eq!(count(&p, kind), 0, "{:?}", p.collectives);
    }
}

#[test]
fn depthwise_conv_keeps_a_channel_split() {
    // A MobileNet block at batch 1: 1×1 expansion (256→512), ReLU, 3×3 depthwise over 512
    // channels, 1×1 projection (512→256). Expansion by output channels, the depthwise Conv
    // on each rank's own channels (`conv-depthwise`), projection by input channels: one
    // all-reduce, as Megatron's MLP.
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[1, 256, 8, 8]);
    let y = conv(&mut b, "expand", x, 256, 512, 1);
    let y = b.op(
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Relu,
        }),
        &[y],
    );
    let w = b.weight("dw.weight", &[512, 1, 3, 3]);
    let y = b.op(
        Op::Conv(ConvAttrs {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            group: 512,
            depthwise: true,
        }),
        &[y, w],
    );
    let z = conv(&mut b, "project", y, 512, 256, 1);
    b.output(z);
    let p = run(&b.g, 2).plan;
    assert_eq!(
        conv_choices(&p),
        serde_json::json!({
            "R,S(0),S(0) -> S(1)": 1,
            "S(1),S(0) -> S(1)": 1,
            "S(1),S(1),P -> P": 1
        }),
    );
    assert_eq!(
        count(&p, CollectiveKind::AllReduce),
        1,
        "{:?}",
        p.collectives
    );
    assert_eq!(p.collectives.len(), 1, "{:?}", p.collectives);
    let notes = &p.summary.notes;
    let why = "(conv-depthwise): each rank convolves its own channels, 9.0 KB of parameters per \
               rank instead of 18.0 KB, X and Y split on channels, nothing moved; batch 1 does \
               not divide over 2 ranks";
    assert!(notes.iter().any(|n| n.contains(why)), "{notes:#?}");
}
