//! The reference executor against onnxruntime's outputs: the bundled example models
//! (outputs recorded by examples/models/generate.py) and the real MiniLM-L3 export on real
//! token ids at batch 1×128 and 8×128 (recorded by scripts/fetch_models.py).
mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use tessera_compiler::onnx::{import_model, ImportOptions};
use tessera_runtime::reference::run_graph;
use tessera_runtime::weights::WeightStore;

/// Imports `model` with the shapes of `inputs`, runs the reference executor and returns the
/// max abs difference to onnxruntime per output.
fn check(
    model: &Path,
    inputs: BTreeMap<String, tessera_ir::Tensor>,
    ort_file: impl Fn(&str) -> std::path::PathBuf,
) -> Vec<(String, f64)> {
    let input_shapes = inputs
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.clone()))
        .collect();
    let m = import_model(
        model,
        &ImportOptions {
            input_shapes,
            ..Default::default()
        },
    )
    .expect("import");
    let store = WeightStore::open(model).expect("weights");
    let outs = run_graph(&m.graph, &store, &inputs).expect("run");
    m.graph
        .outputs
        .iter()
        .zip(&outs)
        .map(|(id, got)| {
            let name = m.graph.tensor(*id).name.clone();
            let want = read_npy(&ort_file(&name));
            (name, max_abs_diff(got, &want))
        })
        .collect()
}

#[test]
fn example_models_match_onnxruntime() {
    for name in ["mlp", "gpt2_1l", "gpt2_4l", "llama_1l", "llama_4l"] {
        let dir = root().join("examples/models").join(name);
        let mut inputs = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let f = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(input) = f
                .strip_prefix("input_")
                .and_then(|s| s.strip_suffix(".npy"))
            {
                inputs.insert(input.to_string(), read_npy(&p));
            }
        }
        let model = root().join(format!("examples/models/{name}.onnx"));
        for (out, diff) in check(&model, inputs, |o| {
            dir.join(format!("ort_output_{}.npy", sanitize(o)))
        }) {
            println!("{name}: output {out}: max abs diff to onnxruntime {diff:.3e}");
            assert!(
                diff <= 1e-4,
                "{name}: output {out} differs from onnxruntime by {diff}"
            );
        }
    }
}

#[test]
fn minilm_matches_onnxruntime_on_real_tokens() {
    let Some(model) = cached_model("paraphrase-MiniLM-L3-v2.onnx") else {
        println!("skipping: paraphrase-MiniLM-L3-v2.onnx not fetched (run scripts/setup.sh)");
        return;
    };
    for batch in [1, 8] {
        let dir = model.parent().unwrap().join(format!("minilm/b{batch}"));
        let mut inputs = BTreeMap::new();
        for n in ["input_ids", "attention_mask"] {
            inputs.insert(n.to_string(), read_npy(&dir.join(format!("{n}.npy"))));
        }
        let diffs = check(&model, inputs, |o| {
            dir.join(format!("ort_{}.npy", sanitize(o)))
        });
        assert_eq!(diffs.len(), 4);
        for (out, diff) in diffs {
            println!("MiniLM {batch}x128: output {out}: max abs diff to onnxruntime {diff:.3e}");
            assert!(
                diff <= 1e-4,
                "MiniLM {batch}x128: output {out} differs by {diff}"
            );
        }
    }
}
