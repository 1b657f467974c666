//! The ONNX Attention op partitioned by heads and by batch: official backend cases with a KV cache
//! (past_key/past_value in, present_key/present_value out, grouped-query heads, the
//! qk_matmul_output, 4-D and 3-D inputs) compiled for 1 and 3 devices, run on CPU devices
//! and compared with the cases' expected outputs (computed by onnx's reference
//! implementation).
mod common;

use common::backend_case::load_case;
use tessera_ir::plan::StepKind;
use tessera_ir::Op;

/// The shape of rank 0's Q in the plan's (non-qk) Attention step.
fn local_q(plan: &tessera_ir::plan::Plan) -> Option<Vec<usize>> {
    plan.ranks[0].steps.iter().find_map(|s| match &s.kind {
        StepKind::Compute {
            op: Op::Attention(a),
            ..
        } if !a.qk_output => Some(plan.values[s.inputs[0].index()].shape.clone()),
        _ => None,
    })
}

#[test]
fn kv_cache_attention_cases_split_by_heads() {
    let cases = [
        // (case, rank-local Q shape on 3 devices: whole heads per rank)
        ("test_attention_4d_gqa_with_past_and_present", [2, 3, 4, 8]),
        (
            "test_attention_4d_with_past_and_present_qk_matmul",
            [2, 1, 4, 8],
        ),
        // 3-D [B, S, 9 heads × 8], q_num_heads 9 / kv_num_heads 3 → 3 / 1 per rank.
        ("test_attention_3d_gqa_with_past_and_present", [2, 4, 24, 0]),
    ];
    for (name, q) in cases {
        let Some(case) = load_case(name) else { return };
        let q: Vec<usize> = q.into_iter().filter(|&d| d > 0).collect();
        for n in [1, 3] {
            // Alone, attention is cheapest replicated (its inputs and outputs are the
            // graph's, replicated); pinning its outputs split on the head axis, as the
            // projections around it make them in a model, asks for the head split: axis 2
            // of a 3-D Y [B, S, heads·D], else 1.
            let plan = case.plan(name, n, |rank| if rank == 3 { 2 } else { 1 });
            if n == 3 {
                assert_eq!(
                    local_q(&plan),
                    Some(q.clone()),
                    "{name}: not split by heads"
                );
            }
            case.check(name, &plan);
        }
    }
}

/// Attention split by batch (`attention-batch`): with the outputs pinned split on axis 0,
/// as a batch-split layer makes them, each rank's Attention step reads its own sequences
/// whole (every head), masks and caches along; the outputs equal the official ones.
#[test]
fn attention_cases_split_by_batch() {
    let cases = [
        "test_attention_4d_gqa_with_past_and_present",
        "test_attention_4d_attn_mask",
        "test_attention_3d_gqa_attn_mask",
        "test_attention_3d_diff_heads_with_past_and_present",
        "test_attention_4d_with_past_and_present_qk_matmul",
    ];
    for name in cases {
        let Some(case) = load_case(name) else { return };
        let plan = case.plan(name, 2, |_| 0);
        let q = local_q(&plan).expect("an Attention step");
        let full = &case.inputs[&case.model.graph.input[0].name].shape;
        let mut want = full.clone();
        want[0] = full[0] / 2;
        assert_eq!(q, want, "{name}: Q on rank 0 is not half the batch");
        case.check(name, &plan);
    }
}

/// Causal ONNX Attention (`is_causal`, with a boolean or additive mask on top or none, and
/// grouped-query heads) runs as the fused kernel on CPU devices, on 1 device and split by
/// batch on 2, and equals the official outputs.
#[test]
fn causal_attention_cases_run_fused() {
    use tessera_runtime::exec::{run_plan, RunOptions};
    let cases = [
        "test_attention_4d_causal",
        "test_attention_4d_gqa_causal",
        "test_attention_4d_attn_mask_4d_causal",
        "test_attention_4d_attn_mask_3d_causal",
    ];
    for name in cases {
        let Some(case) = load_case(name) else { return };
        for n in [1, 2] {
            let plan = case.plan(name, n, |_| 0);
            case.check(name, &plan);
            let (_, stats) = run_plan(&plan, &case.store, &case.inputs, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{name} on {n}: {e}"));
            for r in &stats.ranks {
                assert!(
                    r.fused.keys().any(|k| k.contains("Attention")),
                    "{name} on {n}: rank {} ran no fused attention ({:?})",
                    r.rank,
                    r.fused
                );
            }
        }
    }
}
