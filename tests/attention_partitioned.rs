//! The ONNX Attention op partitioned by heads: official backend cases with a KV cache
//! (past_key/past_value in, present_key/present_value out, grouped-query heads, the
//! qk_matmul_output) compiled for 1 and 3 devices, run on CPU devices and compared with the
//! cases' expected outputs (computed by onnx's reference implementation).
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
        // (case, query heads per rank on 3 devices; None: 3-D, which stays replicated)
        ("test_attention_4d_gqa_with_past_and_present", Some(3)),
        ("test_attention_4d_with_past_and_present_qk_matmul", Some(1)),
        ("test_attention_3d_gqa_with_past_and_present", None),
    ];
    if !dir.is_dir() {
        eprintln!(
            "SKIP: {} not generated (run scripts/setup.sh)",
            dir.display()
        );
        return;
    }
    for (case, local_heads) in cases {
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
            },
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let store = WeightStore::open(&model).unwrap();
        for n in [1, 3] {
            // Alone, attention is cheapest replicated (its inputs and outputs are the
            // graph's, replicated); pinning its outputs split on the head axis, as the
            // projections around it make them in a model, asks for the head split.
            let mut opts = PartitionOptions::new(n);
            if n > 1 && local_heads.is_some() {
                for o in &m.graph.output {
                    opts.pins
                        .insert(o.name.clone(), tessera_ir::Layout::Split(1));
                }
            }
            let plan = partition(&imported.graph, &opts)
                .unwrap_or_else(|e| panic!("{case} on {n}: {e}"))
                .plan;
            if n == 3 {
                // The Attention step's Q holds this rank's heads only.
                let q_heads = plan.ranks[0].steps.iter().find_map(|s| match &s.kind {
                    StepKind::Compute {
                        op: Op::Attention(a),
                        ..
                    } if !a.qk_output => Some(plan.values[s.inputs[0].index()].shape[1]),
                    _ => None,
                });
                if let Some(h) = local_heads {
                    assert_eq!(q_heads, Some(h), "{case}: attention not split by heads");
                }
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
