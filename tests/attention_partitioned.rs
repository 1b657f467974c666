//! The ONNX Attention op partitioned by heads: official backend cases with a KV cache
//! (past_key/past_value in, present_key/present_value out, grouped-query heads, the
//! qk_matmul_output, 4-D and 3-D inputs) compiled for 1 and 3 devices, run on CPU devices
//! and compared with the cases' expected outputs (computed by onnx's reference
//! implementation).
mod common;

use common::{max_abs_diff, root};
use onnx_protobuf::{Message, ModelProto, TensorProto};
use std::collections::BTreeMap;
use tessera_compiler::onnx::{decode_tensor_proto, import_model, ImportOptions};
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_ir::plan::StepKind;
use tessera_ir::{Op, Tensor};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

fn pb(path: &std::path::Path) -> (String, Tensor) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = TensorProto::parse_from_bytes(&bytes).unwrap();
    let name = t.name.clone();
    (name.clone(), decode_tensor_proto(&t, &name).unwrap())
}

#[test]
fn kv_cache_attention_cases_split_by_heads() {
    let dir = root().join(".cache/onnx-conformance/node");
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
    if !dir.is_dir() {
        eprintln!(
            "SKIP: {} not generated (run scripts/setup.sh)",
            dir.display()
        );
        return;
    }
    for (case, local_q) in cases {
        let local_q: Vec<usize> = local_q.into_iter().filter(|&d| d > 0).collect();
        let d = dir.join(case);
        let model = d.join("model.onnx");
        let m = ModelProto::parse_from_bytes(&std::fs::read(&model).unwrap()).unwrap();
        let mut inputs = BTreeMap::new();
        let mut want = Vec::new();
        for k in 0.. {
            let p = d.join(format!("test_data_set_0/input_{k}.pb"));
            if !p.exists() {
                break;
            }
            let (_, t) = pb(&p);
            inputs.insert(m.graph.input[k].name.clone(), t);
        }
        for k in 0..m.graph.output.len() {
            want.push(pb(&d.join(format!("test_data_set_0/output_{k}.pb"))).1);
        }
        let shapes = inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect();
        let imported = import_model(
            &model,
            &ImportOptions {
                input_shapes: shapes,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let store = WeightStore::open(&model).unwrap();
        for n in [1, 3] {
            // Alone, attention is cheapest replicated (its inputs and outputs are the
            // graph's, replicated); pinning its outputs split on the head axis, as the
            // projections around it make them in a model, asks for the head split.
            let mut opts = PartitionOptions::new(n);
            if n > 1 {
                for o in &m.graph.output {
                    // The head axis: 2 of a 3-D Y [B, S, heads·D], else 1.
                    let rank = imported
                        .graph
                        .tensors
                        .iter()
                        .find(|t| t.name == o.name)
                        .map_or(4, |t| t.shape.len());
                    let axis = if rank == 3 { 2 } else { 1 };
                    opts.pins
                        .insert(o.name.clone(), tessera_ir::Layout::Split(axis));
                }
            }
            let plan = partition(&imported.graph, &opts)
                .unwrap_or_else(|e| panic!("{case} on {n}: {e}"))
                .plan;
            if n == 3 {
                // The Attention step's Q holds this rank's heads only.
                let q = plan.ranks[0].steps.iter().find_map(|s| match &s.kind {
                    StepKind::Compute {
                        op: Op::Attention(a),
                        ..
                    } if !a.qk_output => Some(plan.values[s.inputs[0].index()].shape.clone()),
                    _ => None,
                });
                assert_eq!(
                    q,
                    Some(local_q.clone()),
                    "{case}: attention not split by heads"
                );
            }
            let (got, _) = run_plan(&plan, &store, &inputs, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{case} on {n}: {e}"));
            assert_eq!(got.len(), want.len(), "{case}");
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let diff = max_abs_diff(g, w);
                eprintln!("{case} N={n} output {k}: max abs {diff:.2e}");
                assert!(
                    diff < 1e-5,
                    "{case} on {n} devices: output {k} differs by {diff}"
                );
            }
        }
    }
}
