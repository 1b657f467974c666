//! A session's constant cache: steps that read only weights (a causal mask built from
//! constant positions, as torch dynamo exports it) run on the first run only; later runs
//! serve their outputs and skip the rest of that subgraph. Every run must still equal the
//! reference executor on its own inputs.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorData};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::session::{Session, SessionOptions};
use tessera_runtime::weights::WeightStore;

const S: usize = 16;

/// `Softmax(x + mask)` and `Softmax(2x + mask)` with the causal mask
/// `Where(pos_j <= pos_i, 0, -inf)` computed from i64 position weights.
fn masked_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![2, S, S]);
    let pi = inline_weight(
        &mut g,
        "pos_i",
        Tensor::new(
            DType::I64,
            vec![1, S, 1],
            TensorData::I64((0..S as i64).collect()),
        )
        .unwrap(),
    );
    let pj = inline_weight(
        &mut g,
        "pos_j",
        Tensor::new(
            DType::I64,
            vec![1, 1, S],
            TensorData::I64((0..S as i64).collect()),
        )
        .unwrap(),
    );
    let zero = inline_weight(&mut g, "zero", Tensor::f32(vec![], vec![0.0]));
    let ninf = inline_weight(&mut g, "ninf", Tensor::f32(vec![], vec![f32::NEG_INFINITY]));
    let two = inline_weight(&mut g, "two", Tensor::f32(vec![], vec![2.0]));
    let le = Op::Binary(BinaryAttrs {
        kind: BinaryOp::LessOrEqual,
    });
    let (_, causal) = node(
        &mut g,
        "causal",
        le,
        vec![pj, pi],
        vec![1, S, S],
        DType::Bool,
    );
    let mask = f32_node(
        &mut g,
        "mask",
        Op::Where,
        vec![causal, zero, ninf],
        vec![1, S, S],
    );
    let shape = vec![2, S, S];
    let sm = || {
        Op::Softmax(SoftmaxAttrs {
            axis: 2,
            log: false,
        })
    };
    let z1 = binary_node(&mut g, "z1", BinaryOp::Add, [x, mask], shape.clone());
    let y1 = f32_node(&mut g, "y1", sm(), vec![z1], shape.clone());
    let x2 = binary_node(&mut g, "x2", BinaryOp::Mul, [x, two], shape.clone());
    let z2 = binary_node(&mut g, "z2", BinaryOp::Add, [x2, mask], shape.clone());
    let y2 = f32_node(&mut g, "y2", sm(), vec![z2], shape);
    g.outputs.extend([y1, y2]);
    g
}

#[test]
fn constant_steps_are_served_from_the_second_run_and_every_run_matches() {
    let plan = single_rank_plan(masked_graph());
    let session = Session::new(
        plan.clone(),
        WeightStore::with_dir("."),
        &SessionOptions::default(),
    )
    .unwrap();
    let mut cached = Vec::new();
    for seed in 0..3 {
        let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[2, S, S], 100 + seed))]);
        let want = reference(&plan, &inputs);
        let (got, stats) = session.run_shared(Arc::new(inputs)).unwrap();
        // Bitwise: the served mask is the one the first run computed.
        assert_eq!(got, want, "run {seed}");
        assert_eq!(stats.ranks[0].steps, plan.ranks[0].steps.len());
        cached.push(stats.ranks[0].cached_steps);
    }
    // First run: everything computed. Then at least the mask (served) and its comparison
    // and position loads (skipped), and the load of `two` (served); the six input-dependent
    // steps (the input, z1, y1, x2, z2, y2) always run.
    assert_eq!(cached[0], 0);
    assert!(cached[1] >= 3 && cached[1] == cached[2], "{cached:?}");
    assert_eq!(cached[1], plan.ranks[0].steps.len() - 6, "{cached:?}");
    // A one-shot run (no session) keeps no cache.
    let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[2, S, S], 7))]);
    let (_, stats) = run_plan(
        &plan,
        &WeightStore::with_dir("."),
        &inputs,
        &RunOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.ranks[0].cached_steps, 0);
}

/// The run hands its output tensors over without a copy (`Device::download_owned`): an
/// output the constant cache also holds (the mask), and outputs listed twice, must still
/// come back whole and equal on every run, and the cache must keep serving the mask.
#[test]
fn outputs_handed_over_leave_the_constant_cache_and_repeated_outputs_intact() {
    let mut g = masked_graph();
    let (y1, mask) = (g.outputs[0], g.nodes[1].outputs[0]);
    assert_eq!(g.tensor(mask).name, "mask_out", "the mask node's output");
    g.outputs.extend([mask, y1, mask]);
    let plan = single_rank_plan(g);
    let session = Session::new(
        plan.clone(),
        WeightStore::with_dir("."),
        &SessionOptions::default(),
    )
    .unwrap();
    for seed in 0..3 {
        let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[2, S, S], 200 + seed))]);
        let want = reference(&plan, &inputs);
        let (got, stats) = session.run_shared(Arc::new(inputs)).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got, want, "run {seed}");
        assert_eq!(got[2], got[4], "run {seed}: the mask listed twice");
        assert_eq!(got[0], got[3], "run {seed}: y1 listed twice");
        if seed > 0 {
            assert!(
                stats.ranks[0].cached_steps > 0,
                "run {seed}: the cache serves the mask"
            );
        }
    }
}

/// Two ranks, each with half the batch: a weight stored split and gathered on every run,
/// and a constant cut to each rank's batch rows. `y = x · gather(w) + slice(c)`.
fn gathered_weight_plan() -> tessera_ir::plan::Plan {
    use tessera_ir::plan::{CollectiveKind, StepKind};
    use tessera_ir::Layout;
    let (b, d) = (4, 8);
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![b, d]);
    let w = inline_weight(&mut g, "w", rand_f32(&[d, d], 11));
    let c = inline_weight(&mut g, "c", rand_f32(&[b, d], 12));
    let mm = Op::MatMul(MatMulAttrs {});
    let (n_mm, xw) = node(&mut g, "mm", mm, vec![x, w], vec![b, d], DType::F32);
    let add = Op::Binary(BinaryAttrs {
        kind: BinaryOp::Add,
    });
    let (n_add, y) = node(&mut g, "add", add, vec![xw, c], vec![b, d], DType::F32);
    g.outputs.push(y);
    let mut p = PlanBuilder::new(g, 2);
    let vx = p.value(x, Layout::Split(0));
    let vws = p.value(w, Layout::Split(0));
    let vw = p.value(w, Layout::Replicated);
    let vc = p.value(c, Layout::Replicated);
    let vcs = p.value(c, Layout::Split(0));
    let vxw = p.value(xw, Layout::Split(0));
    let vys = p.value(y, Layout::Split(0));
    let vy = p.value(y, Layout::Replicated);
    p.input(x, Some((0, b)), vx);
    p.load_weight(w, Some((0, d)), vws);
    p.collective(CollectiveKind::AllGather, Some(0), None, vws, vw);
    p.load_weight(c, None, vc);
    p.step(
        |r| StepKind::LocalSlice {
            slice: PlanBuilder::chunk(0, b, 2, r),
        },
        &[vc],
        &[vcs],
    );
    p.compute(n_mm, &[vx, vw], vxw);
    p.compute(n_add, &[vxw, vcs], vys);
    p.collective(CollectiveKind::AllGather, Some(0), None, vys, vy);
    p.plan.outputs.push(vy);
    p.plan
}

/// The slice of the constant is served from the second run; the weight is still gathered
/// on every run (its gathered form is never cached), from the peers' shards without
/// meeting them once both ranks have gathered it once. Every run equals the reference.
#[test]
fn a_weight_gathered_on_every_run_and_a_sliced_constant_match_on_every_run() {
    let plan = gathered_weight_plan();
    let session = Session::new(
        plan.clone(),
        WeightStore::with_dir("."),
        &SessionOptions::default(),
    )
    .unwrap();
    for seed in 0..4 {
        let inputs = BTreeMap::from([("x".to_string(), rand_f32(&[4, 8], 300 + seed))]);
        let want = reference(&plan, &inputs);
        let (got, stats) = session.run_shared(Arc::new(inputs)).unwrap();
        assert_eq!(got, want, "run {seed}");
        for r in &stats.ranks {
            assert_eq!(r.collectives, 2, "run {seed} rank {}", r.rank);
            // From the second run: the weight's load served, the constant's load skipped,
            // its slice served. The input, the gather, the product, the sum and the
            // output's gather run.
            let want_cached = if seed == 0 { 0 } else { 3 };
            assert_eq!(r.cached_steps, want_cached, "run {seed} rank {}", r.rank);
        }
    }
}
