//! End to end: every example model (and MiniLM, when present) is imported, partitioned for
//! N ∈ {1, 2, 3, 4, 8} devices, run on N CPU devices from its plan (round-tripped through
//! JSON, as `tessera-run` would read it), and compared with the unpartitioned model on the
//! reference executor: normwise relative error ≤ 1e-5 (see `tessera_runtime::exec::check`).
mod common;

use common::{cached_model, max_abs_diff, read_npy, root, sanitize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::{import_model, ImportOptions};
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_ir::plan::Plan;
use tessera_ir::Tensor;
use tessera_runtime::exec::check::compare_outputs;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::reference::run_graph;
use tessera_runtime::weights::WeightStore;

/// Every device count up to 8: 3, 5, 6 and 7 divide no head count or hidden size of the
/// examples, so their plans use ragged splits.
const DEVICES: [usize; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// Parameters a rank may hold, as a multiple of an N-th of the split-able weights (matrices
/// and tables; vectors such as norm scales and biases may stay replicated).
const PARAMS_PER_RANK: f64 = 1.25;
const TOLERANCE: f64 = 1e-5;

/// Inputs stored as `PREFIX<name>.npy` files in `dir`, by name.
fn read_inputs(dir: &Path, prefix: &str) -> BTreeMap<String, Tensor> {
    let mut inputs = BTreeMap::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(name) = file
            .strip_prefix(prefix)
            .and_then(|f| f.strip_suffix(".npy"))
        {
            let t = read_npy(&path);
            inputs.insert(name.to_string(), t);
        }
    }
    inputs
}

/// Imports `model`, then for each device count partitions it, runs the plan and compares it
/// with the reference. Returns the device counts that ran.
/// onnxruntime's output for `name`, recorded as `<dir>/<prefix><sanitised name>.npy` by
/// examples/models/generate.py and scripts/fetch_models.py.
fn ort_output(ort: (&Path, &str), name: &str) -> Tensor {
    read_npy(&ort.0.join(format!("{}{}.npy", ort.1, sanitize(name))))
}

/// Partitions `model` for every N, runs each plan and compares with the reference executor
/// (relative 1e-5) and, when `ort` (dir, file prefix) is given, with onnxruntime's recorded
/// outputs (max abs 1e-4). Returns the device counts that ran.
fn check_model(
    label: &str,
    model: &Path,
    inputs: &BTreeMap<String, Tensor>,
    ort: Option<(&Path, &str)>,
) -> Vec<(usize, BTreeMap<&'static str, usize>)> {
    let input_shapes = inputs
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    let imported = import_model(
        model,
        &ImportOptions {
            input_shapes,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{label}: import: {e}"));
    let graph = &imported.graph;
    let store = WeightStore::open(model).unwrap_or_else(|e| panic!("{label}: {e}"));
    let want =
        run_graph(graph, &store, inputs).unwrap_or_else(|e| panic!("{label}: reference: {e}"));
    let names: Vec<String> = graph
        .outputs
        .iter()
        .map(|t| graph.tensor(*t).name.clone())
        .collect();
    let mut ran = Vec::new();
    for n in DEVICES {
        let t0 = std::time::Instant::now();
        let plan = match partition(graph, &PartitionOptions::new(n)) {
            Ok(p) => p.plan,
            Err(e) => {
                eprintln!("SKIP {label} on {n} devices: no valid plan ({e})");
                continue;
            }
        };
        let partition_s = t0.elapsed().as_secs_f64();
        // Parameters per rank: at most 1.25/N of the matrices, vectors aside.
        let (matrices, vectors) = common::matrix_and_vector_bytes(graph);
        let most = common::max_param_bytes(&plan);
        let bound = PARAMS_PER_RANK * matrices as f64 / n as f64 + vectors as f64;
        eprintln!(
            "{label} N={n}: params per rank {most} B, {:.2}/N of the matrices",
            (most.saturating_sub(vectors)) as f64 * n as f64 / matrices.max(1) as f64
        );
        assert!(
            most as f64 <= bound,
            "{label} on {n} devices: a rank holds {most} B of parameters, over {bound:.0} B \
             ({PARAMS_PER_RANK}/N of {matrices} B of matrices plus {vectors} B of vectors)"
        );
        let json = serde_json::to_string(&plan).expect("plan serialises");
        let plan: Plan = serde_json::from_str(&json).expect("plan deserialises");
        let (got, stats) = run_plan(&plan, &store, inputs, &RunOptions::default())
            .unwrap_or_else(|e| panic!("{label} on {n} devices: {e}"));
        assert_eq!(stats.ranks.len(), n);
        eprintln!(
            "{label} N={n}: partitioned in {partition_s:.1} s, ran in {:.1} ms",
            stats.wall_ms
        );
        for d in compare_outputs(&names, &got, &want, TOLERANCE) {
            eprintln!(
                "{label} N={n} output '{}': max abs {:.3e}, max rel {:.3e}, {} collectives/rank",
                d.name, d.max_abs, d.max_rel, stats.ranks[0].collectives
            );
            assert!(
                d.ok,
                "{label} on {n} devices: output '{}' relative error {:e}",
                d.name, d.max_rel
            );
        }
        if let Some(ort) = ort {
            for (name, t) in names.iter().zip(&got) {
                let diff = max_abs_diff(t, &ort_output(ort, name));
                eprintln!("{label} N={n} output '{name}': max abs to onnxruntime {diff:.3e}");
                assert!(
                    diff <= 1e-4,
                    "{label} on {n} devices: output '{name}' differs from onnxruntime by {diff}"
                );
            }
        }
        ran.push((n, stats.ranks[0].fused.clone()));
    }
    ran
}

#[test]
fn example_models_run_partitioned_and_match_the_reference() {
    let dir = root().join("examples/models");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    assert!(!models.is_empty(), "no example models in {}", dir.display());
    for model in models {
        let stem = model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let inputs = read_inputs(&dir.join(&stem), "input_");
        assert!(!inputs.is_empty(), "{stem}: no input_*.npy files");
        let ort_dir = dir.join(&stem);
        let ran = check_model(&stem, &model, &inputs, Some((&ort_dir, "ort_output_")));
        // Fused kernels the CPU devices must run, on 1 and on 2 devices: GPT-2's attention
        // (Where causal mask, Kᵀ as two transposes; 4 heads per rank) once per layer, and its
        // MLP's MatMul + bias + GELU (the erf chain canonicalised to one Gelu op) once per
        // layer. (LLaMA's decomposed RMSNorm is canonicalised to the RmsNorm op, whose
        // kernel is one pass: compiler/tests/canon_models.rs counts them.)
        let expected = [
            ("gpt2_", "fused Attention", 1, 0),
            ("gpt2_", "fused MatMul+Bias+Gelu", 1, 0),
        ];
        for (prefix, kernel, per_layer, extra) in expected {
            let Some(layers) = stem
                .strip_prefix(prefix)
                .and_then(|l| l.trim_end_matches('l').parse::<usize>().ok())
            else {
                continue;
            };
            for (n, fused) in ran.iter().filter(|r| r.0 <= 2) {
                let want = per_layer * layers + extra;
                assert_eq!(fused.get(kernel), Some(&want), "{stem} N={n}: {fused:?}");
            }
        }
        let ran: Vec<usize> = ran.into_iter().map(|r| r.0).collect();
        assert!(
            ran.contains(&2),
            "{stem}: the 2-device plan must run (ran on {ran:?})"
        );
    }
}

#[test]
fn minilm_runs_partitioned_and_matches_the_reference() {
    let model = cached_model("paraphrase-MiniLM-L3-v2.onnx");
    let data = model
        .as_ref()
        .and_then(|m| m.parent())
        .map(|d| d.join("minilm/b1"));
    let (Some(model), Some(data)) = (model, data.filter(|d| d.is_dir())) else {
        eprintln!("SKIP minilm: model or its token data not fetched (run scripts/setup.sh)");
        return;
    };
    let inputs: BTreeMap<String, Tensor> = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| (n.to_string(), read_npy(&data.join(format!("{n}.npy")))))
        .collect();
    let ran = check_model("minilm", &model, &inputs, Some((&data, "ort_")));
    // The CPU devices ran MiniLM's attention and FFN as fused kernels (and still matched the
    // unfused reference and onnxruntime above): per layer one attention and one
    // MatMul+Bias+Gelu, on 1 device and on 2 (6 heads per rank).
    for (n, fused) in &ran {
        eprintln!("minilm N={n}: fused kernels on rank 0: {fused:?}");
        if *n <= 2 {
            assert_eq!(fused.get("fused Attention"), Some(&3), "N={n}: {fused:?}");
            assert_eq!(
                fused.get("fused MatMul+Bias+Gelu"),
                Some(&3),
                "N={n}: {fused:?}"
            );
        }
    }
    let ran: Vec<usize> = ran.into_iter().map(|r| r.0).collect();
    assert!(
        ran.contains(&2),
        "minilm: the 2-device plan must run (ran on {ran:?})"
    );
}
