//! GPT-2 style blocks: exactly 2 all-reduces per layer of B·S·H values, ~1/N of the weights.
mod partition_common;
use partition_common::*;
use tessera_ir::plan::CollectiveKind;

#[test]
fn gpt_two_all_reduces_per_layer() {
    for (n, heads, layers) in [(2, 8, 2), (4, 16, 1), (8, 8, 1), (4, 8, 2)] {
        let (bsz, s, h) = (1, 16, 64);
        let g = gpt(layers, bsz, s, h, heads);
        let p = run(&g, n).plan;
        assert_eq!(
            count(&p, CollectiveKind::AllReduce),
            2 * layers,
            "n={n} heads={heads}: {:?}",
            p.summary
        );
        assert_eq!(p.collectives.len(), 2 * layers, "{:?}", p.summary);
        assert!(p
            .collectives
            .iter()
            .all(|c| c.bytes == (bsz * s * h * 4) as u64));
        // Per-device weights: the four matrices split N ways, small params replicated.
        let big = (layers * 12 * h * h * 4) as u64;
        let small = weight_bytes_of(&g) - big;
        assert!(
            p.estimates[0].param_bytes <= big / n as u64 + small,
            "{} vs {}",
            p.estimates[0].param_bytes,
            big / n as u64
        );
        assert!(p.estimates[0].param_bytes >= big / n as u64);
        assert_eq!(
            p.summary.lower_bound_bytes,
            (2 * layers * bsz * s * h * 4) as u64
        );
        assert!(p.search.stop_reason.is_saturated(), "{:?}", p.search);
    }
}

#[test]
fn twelve_heads_on_eight_devices_gets_a_note() {
    let g = gpt(1, 1, 16, 96, 12);
    let p = run(&g, 8).plan;
    assert!(
        p.summary
            .notes
            .iter()
            .any(|s| s.contains("12 heads") && s.contains("8 devices")),
        "{:?}",
        p.summary.notes
    );
    // Still a valid plan with every output replicated.
    assert!(p
        .outputs
        .iter()
        .all(|v| p.values[v.index()].layout == tessera_ir::Layout::Replicated));
}

#[test]
fn one_device_is_trivial_and_plans_are_deterministic() {
    let g = gpt(1, 1, 8, 32, 4);
    let p = run(&g, 1).plan;
    assert!(p.collectives.is_empty());
    assert!(p
        .layouts
        .iter()
        .flatten()
        .all(|l| *l == tessera_ir::Layout::Replicated));
    let a = serde_json::to_string(&run(&g, 4).plan).unwrap();
    let b = serde_json::to_string(&run(&g, 4).plan).unwrap();
    assert_eq!(a, b);
}
