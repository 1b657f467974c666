//! Imports the real paraphrase-MiniLM-L3-v2 model (skipped with a reason when absent).
use std::path::PathBuf;
use tessera_compiler::onnx::{import_model, parse_shape_spec, ImportOptions};
use tessera_ir::{Op, WeightData};

const MODEL: &str = "paraphrase-MiniLM-L3-v2.onnx";

fn model_path() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("TESSERA_MODELS") {
        candidates.push(PathBuf::from(dir).join(MODEL));
    }
    // compiler/ is one level below the workspace root.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(root.join(".cache/models").join(MODEL));
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn minilm_imports_fully_static() {
    let Some(path) = model_path() else {
        eprintln!("SKIP minilm_imports_fully_static: {MODEL} not found in $TESSERA_MODELS or .cache/models");
        return;
    };
    // The model's inputs are input_ids and attention_mask (no token_type_ids).
    let input_shapes = parse_shape_spec("input_ids=1x128,attention_mask=1x128").unwrap();
    let m = import_model(&path, &ImportOptions { input_shapes }).expect("MiniLM imports");
    let r = &m.report;
    assert_eq!(r.onnx_nodes, 354);
    assert_eq!(r.opset, 17);
    assert_eq!(r.op_histogram["MatMul"], 24);
    assert_eq!(r.op_histogram["Shape"], 31);
    assert!(r.folded_nodes >= 112 + 31, "Constant and Shape nodes all fold: {}", r.folded_nodes);
    let g = &m.graph;
    // Every shape computation folded away: no Shape-like op survives; reshapes are static.
    let count = |f: &dyn Fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    assert_eq!(count(&|o| matches!(o, Op::MatMul(_))), 24);
    assert_eq!(count(&|o| matches!(o, Op::LayerNorm(_))), 7);
    assert_eq!(count(&|o| matches!(o, Op::Softmax(_))), 3);
    for n in &g.nodes {
        for &t in n.inputs.iter().chain(&n.outputs) {
            assert!(!g.tensor(t).shape.is_empty() || g.weights.contains_key(&t) || matches!(n.op, Op::Binary(_)));
        }
    }
    let out = g.tensor(g.outputs[0]);
    assert_eq!(out.shape, vec![1, 128], "output 'output' is [batch, seq]");
    let hidden = g.tensors.iter().find(|t| t.name == "onnx::Shape_422").expect("hidden state tensor");
    assert_eq!(hidden.shape, vec![1, 128, 384]);
    // Weights stay in the file: 3 layers × (4 attention + 2 FFN) matrices plus embeddings.
    let file_bytes: u64 = g
        .weights
        .values()
        .filter_map(|w| match &w.data {
            WeightData::File { path, length, .. } if path == MODEL => Some(*length),
            _ => None,
        })
        .sum();
    assert!(file_bytes > 60_000_000, "file-backed weight bytes {file_bytes}");
    assert!(r.parameter_count > 15_000_000, "parameters {}", r.parameter_count);
    eprintln!("{r:#?}");
}
