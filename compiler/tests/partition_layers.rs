//! Layer detection: the decomposed solve (one representative block + chain DP) gives the
//! same plan as solving the whole graph at once.
mod partition_common;
use partition_common::*;
use tessera_compiler::partition::{partition, ObjectiveKind, PartitionOptions};
use tessera_ir::plan::{CollectiveKind, Plan};
use tessera_ir::Graph;

fn strip_layers(p: &Plan) -> String {
    let mut p = p.clone();
    p.layers = None;
    p.search = tessera_ir::plan::SearchStats {
        extractor: Default::default(),
        eclasses: 0,
        enodes: 0,
        cost: 0.0,
        lower_bound: 0.0,
        ..p.search.clone()
    };
    for r in &mut p.ranks {
        for s in &mut r.steps {
            s.layer = None;
        }
    }
    for c in &mut p.collectives {
        c.layer = None;
    }
    serde_json::to_string(&p).unwrap()
}

/// All-reduces tagged with layer `l`.
fn all_reduces_in(p: &Plan, l: u32) -> usize {
    p.collectives
        .iter()
        .filter(|c| c.layer == Some(l) && c.kind == CollectiveKind::AllReduce)
        .count()
}

/// The plans are the same but for layer tags and search statistics (the first difference
/// shown in context otherwise).
fn assert_same_plan(a: &Plan, b: &Plan, label: &str) {
    let (sa, sb) = (strip_layers(a), strip_layers(b));
    if let Some(i) = sa.bytes().zip(sb.bytes()).position(|(x, y)| x != y) {
        panic!(
            "{label}: plans differ at {i}: ...{}... vs ...{}...",
            &sa[i.saturating_sub(200)..(i + 200).min(sa.len())],
            &sb[i.saturating_sub(200)..(i + 200).min(sb.len())]
        );
    }
    assert_eq!(sa.len(), sb.len(), "{label}");
}

/// Checks that `lay`, the layered plan of `g` under `o`, is the exact whole-graph plan (no
/// state budget, no time limit): the same cost and program, and a bound on bytes (the
/// layered solve's, each piece under its own budget share) between the whole graph's and
/// the bytes the plan moves. Returns the whole-graph plan's gap, the one field left out.
fn assert_is_whole_plan(g: &Graph, o: &PartitionOptions, lay: &Plan, label: &str) -> f64 {
    let mut o = o.clone();
    o.detect_layers = false;
    o.max_states = usize::MAX;
    o.time_limit = None;
    let whole = partition(g, &o).unwrap().plan;
    let (a, b) = (lay.search.cost, whole.search.cost);
    assert!((a - b).abs() <= 1e-12 * b, "{label}: {a} vs {b}");
    let moved: u64 = lay.collectives.iter().map(|c| c.bytes).sum();
    let (lb, wb) = (
        lay.summary.lower_bound_bytes,
        whole.summary.lower_bound_bytes,
    );
    assert!(wb <= lb && lb <= moved, "{label}: {wb} <= {lb} <= {moved}");
    let mut whole_plan = whole.clone();
    whole_plan.summary.lower_bound_bytes = lb;
    whole_plan.search.gap = lay.search.gap;
    assert_same_plan(lay, &whole_plan, label);
    whole.search.gap
}

#[test]
fn layered_solve_equals_whole_solve() {
    for (layers, n, objective) in [
        (2, 2, ObjectiveKind::Memory),
        (2, 4, ObjectiveKind::Memory),
        (3, 4, ObjectiveKind::Memory),
        (3, 8, ObjectiveKind::Memory),
        (2, 4, ObjectiveKind::Latency),
        (3, 2, ObjectiveKind::Latency),
    ] {
        let g = gpt(layers, 2, 16, 64, 8);
        let mut o = PartitionOptions::new(n);
        o.objective = objective;
        let lay = partition(&g, &o).unwrap();
        o.detect_layers = false;
        // The whole-graph solve is the exact reference: no state budget.
        o.max_states = usize::MAX;
        o.time_limit = None;
        let whole = partition(&g, &o).unwrap();
        let info = lay.plan.layers.as_ref().expect("layers detected");
        assert_eq!(info.count, layers);
        assert_eq!(info.nodes_per_layer, 27);
        assert!(whole.plan.layers.is_none());
        let (a, b) = (lay.plan.search.cost, whole.plan.search.cost);
        assert!(
            (a - b).abs() <= 1e-12 * b,
            "{layers} layers n={n}: {a} vs {b}"
        );
        assert_eq!(
            lay.plan.summary.lower_bound_bytes,
            whole.plan.summary.lower_bound_bytes
        );
        assert_same_plan(
            &lay.plan,
            &whole.plan,
            &format!("{layers} layers n={n} {objective:?}"),
        );
        // Every collective is tagged with its layer: 2 all-reduces in each.
        for l in 0..layers as u32 * (objective == ObjectiveKind::Memory) as u32 {
            assert_eq!(all_reduces_in(&lay.plan, l), 2, "layer {l}");
        }
        assert!(lay.plan.ranks[0]
            .steps
            .iter()
            .any(|s| s.layer == Some(layers as u32 - 1)));
    }
}

#[test]
fn deep_stack_is_layered_and_deterministic() {
    let g = gpt(24, 1, 16, 64, 8);
    let p = run(&g, 4).plan;
    let info = p.layers.as_ref().unwrap();
    assert_eq!((info.count, info.nodes_per_layer), (24, 27));
    assert_eq!(info.node_layer.iter().flatten().count(), 24 * 27);
    assert_eq!(count(&p, CollectiveKind::AllReduce), 48);
    assert_eq!(p.collectives.len(), 48);
    assert_eq!(p.summary.lower_bound_bytes, 48 * 16 * 64 * 4);
    // Search stats describe one block (+ prologue/epilogue), not 24.
    assert!(p.search.eclasses < 1000, "{:?}", p.search);
    assert!(p
        .search
        .extractor
        .to_string()
        .contains("chain-dp over 24 blocks"));
    let again = run(&g, 4).plan;
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
}

#[test]
fn alternating_masks_are_layers_in_two_phases() {
    // Layers read two masks in turn: one block per phase is solved, and the chain over 6
    // blocks equals the exact whole-graph solve.
    for n in [2, 4] {
        let g = gpt_masks(6, 2, 16, 64, 8, 2);
        let mut o = PartitionOptions::new(n);
        o.objective = ObjectiveKind::Memory;
        let lay = partition(&g, &o).unwrap();
        let info = lay.plan.layers.as_ref().expect("layers detected");
        assert_eq!((info.count, info.nodes_per_layer), (6, 27));
        let extractor = lay.plan.search.extractor.to_string();
        assert!(
            extractor.contains("2 representative blocks of 27"),
            "{extractor}"
        );
        for l in 0..6 {
            assert_eq!(all_reduces_in(&lay.plan, l), 2, "n={n} layer {l}");
        }
        let label = format!("n={n}");
        let whole_gap = assert_is_whole_plan(&g, &o, &lay.plan, &label);
        assert_eq!(whole_gap, lay.plan.search.gap, "{label}");
    }
    // One mask for every layer stays one phase.
    let p = run(&gpt_masks(4, 2, 16, 64, 8, 1), 2).plan;
    assert!(p
        .search
        .extractor
        .to_string()
        .contains("1 representative block of 27"));
}

#[test]
fn layers_that_differ_are_a_chain_of_blocks() {
    // Eight layers whose MLPs all differ in width do not repeat. The graph is cut where
    // only the residual stream crosses (each layer's short MLP half joins its attention
    // half), each block is solved on its own, and the chain DP over the blocks finds the
    // exact whole-graph optimum.
    let widths = [256, 128, 192, 64, 320, 96, 224, 160];
    for (n, objective) in [
        (2, ObjectiveKind::Latency),
        (4, ObjectiveKind::Latency),
        (2, ObjectiveKind::Memory),
        (4, ObjectiveKind::Memory),
    ] {
        let g = gpt_mlps(2, 16, 64, 8, 1, &widths);
        let mut o = PartitionOptions::new(n);
        o.objective = objective;
        let lay = partition(&g, &o).unwrap();
        let info = lay.plan.layers.as_ref().expect("a chain of blocks");
        assert!(info.blocks_differ);
        // 27 nodes a layer; the last block ends with the final norm, whose output (the
        // graph's) is the last tensor handed on.
        assert_eq!((info.count, info.nodes_per_layer), (8, 28));
        let extractor = lay.plan.search.extractor.to_string();
        assert!(extractor.contains("8 blocks that differ"), "{extractor}");
        let label = format!("n={n} {objective:?}");
        // The chain proves its plan optimal; the whole-graph DP finds the same plan but,
        // its Pareto fronts of (cost, bytes) capped, not its bound (65 % at N = 2 under the
        // memory objective).
        assert_eq!(lay.plan.search.gap, 0.0, "{label}");
        assert_is_whole_plan(&g, &o, &lay.plan, &label);
        if objective == ObjectiveKind::Memory {
            for l in 0..8 {
                assert_eq!(all_reduces_in(&lay.plan, l), 2, "{label}: layer {l}");
            }
        }
    }
    // The same widths repeat: layers, not a chain.
    let p = run(&gpt_mlps(2, 16, 64, 8, 1, &[256; 8]), 2).plan;
    let info = p.layers.as_ref().expect("layers");
    assert!(!info.blocks_differ);
    assert_eq!(info.count, 8);
    // Three layers that differ (82 nodes) are solved whole: below CHAIN_MIN_NODES.
    let p = run(&gpt_mlps(2, 16, 64, 8, 1, &widths[..3]), 2).plan;
    assert!(p.layers.is_none());
}

#[test]
fn a_large_repeated_block_is_solved_as_a_chain_of_its_parts() {
    // Layers of three widths repeat with a period of three layers (81 nodes a block): the
    // representative block is solved as a chain of its three layers, and the plan is the
    // exact whole-graph plan.
    let g = gpt_mlps(2, 16, 64, 8, 1, &[256, 128, 192, 256, 128, 192]);
    for n in [2, 4] {
        let mut o = PartitionOptions::new(n);
        o.objective = ObjectiveKind::Memory;
        let lay = partition(&g, &o).unwrap();
        let info = lay.plan.layers.as_ref().expect("layers");
        assert_eq!(
            (info.count, info.nodes_per_layer, info.blocks_differ),
            (2, 81, false)
        );
        assert_eq!(lay.plan.search.gap, 0.0, "n={n}");
        assert_is_whole_plan(&g, &o, &lay.plan, &format!("n={n}"));
    }
}

#[test]
fn a_search_begun_past_its_deadline_plans_within_a_proven_bound() {
    // A zero time limit: every piece starts past the deadline and runs the narrowed pass
    // alone. Its plan still has every collective it needs, its cost is no better than the
    // exact optimum, and its lower bound is no higher than that optimum.
    for (layers, n) in [(3, 4), (2, 2)] {
        let g = gpt(layers, 2, 16, 64, 8);
        let mut o = PartitionOptions::new(n);
        o.objective = ObjectiveKind::Memory;
        o.time_limit = None;
        let exact = partition(&g, &o).unwrap().plan;
        o.time_limit = Some(std::time::Duration::ZERO);
        let late = partition(&g, &o).unwrap().plan;
        let (opt, cost, lower) = (exact.search.cost, late.search.cost, late.search.lower_bound);
        assert!(
            lower <= opt * (1.0 + 1e-9),
            "{layers}x n={n}: bound {lower} > optimum {opt}"
        );
        assert!(
            cost >= opt * (1.0 - 1e-9),
            "{layers}x n={n}: {cost} < optimum {opt}"
        );
        assert!(lower <= cost, "{layers}x n={n}: {lower} > {cost}");
        // The bytes bound holds too: no plan moves fewer bytes than the exact one's bound.
        assert!(late.summary.lower_bound_bytes <= exact.summary.lower_bound_bytes);
        // Every layer still reduces its two row-parallel outputs (or splits nothing).
        let moved: u64 = late.collectives.iter().map(|c| c.bytes).sum();
        assert!(
            moved >= exact.summary.lower_bound_bytes,
            "{layers}x n={n}: {moved}"
        );
    }
}
