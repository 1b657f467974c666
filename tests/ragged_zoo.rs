//! Device counts that divide nothing: the export zoo's base and weight-only int8 variants of
//! each family (scripts/gen_zoo.py, `.cache/zoo`) compiled for N ∈ {3, 5, 6, 7}, where heads,
//! hidden and FFN sizes split ragged (docs/partitioner.md "Ragged splits"), run on N CPU
//! devices and compared with onnxruntime's outputs; a rank may hold at most 1.25/N of the
//! weight matrices (vectors such as norm scales may stay replicated).
mod common;

use common::{npys, root};
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

const DEVICES: [usize; 4] = [3, 5, 6, 7];
const VARIANTS: [&str; 8] = [
    "mlp__base",
    "bert__base",
    "gpt2__base",
    "llama__base",
    "mlp__int8",
    "bert__int8",
    "gpt2__int8",
    "llama__int8",
];
const ORT_TOLERANCE: f64 = 1e-4;
const PARAMS_PER_RANK: f64 = 1.25;

#[test]
fn zoo_models_split_ragged_and_match_onnxruntime() {
    let zoo = root().join(".cache/zoo");
    if !zoo.join("zoo.json").is_file() {
        eprintln!("SKIP ragged zoo: the export zoo is not generated (run scripts/setup.sh)");
        return;
    }
    let mut failures = Vec::new();
    for variant in VARIANTS {
        let (model, dir) = (zoo.join(format!("{variant}.onnx")), zoo.join(variant));
        if !model.is_file() {
            failures.push(format!("{variant}: missing from the zoo"));
            continue;
        }
        let (graph, inputs) = common::import_at_inputs(&model, &dir);
        let graph = &graph;
        let store = WeightStore::open(&model).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let (matrices, vectors) = common::matrix_and_vector_bytes(graph);
        let want = npys(&dir, "ort_output_");
        for n in DEVICES {
            let plan = match partition(graph, &PartitionOptions::new(n)) {
                Ok(p) => p.plan,
                Err(e) => {
                    failures.push(format!("{variant} N={n}: no plan ({e})"));
                    continue;
                }
            };
            let most = common::max_param_bytes(&plan);
            let share = most.saturating_sub(vectors) as f64 * n as f64 / matrices.max(1) as f64;
            let ragged = plan
                .values
                .iter()
                .filter(|v| !v.rank_shapes.is_empty())
                .count();
            let (got, _) = run_plan(&plan, &store, &inputs, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{variant} on {n} devices: {e}"));
            let worst = common::worst_output_diff(&plan, &got, &want);
            eprintln!(
                "{variant} N={n}: params {share:.2}/N of the matrices, {ragged} ragged values, \
                 {} collectives, max abs to onnxruntime {worst:.2e}",
                plan.collectives.len()
            );
            if worst > ORT_TOLERANCE {
                failures.push(format!(
                    "{variant} N={n}: differs from onnxruntime by {worst}"
                ));
            }
            if most as f64 > PARAMS_PER_RANK * matrices as f64 / n as f64 + vectors as f64 {
                failures.push(format!(
                    "{variant} N={n}: a rank holds {share:.2}/N of the matrices (at most {PARAMS_PER_RANK})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
