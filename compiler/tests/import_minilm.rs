//! Imports the real paraphrase-MiniLM-L3-v2 model (skipped with a reason when absent).
use std::collections::HashMap;
use std::path::PathBuf;
use tessera_compiler::onnx::{import_model, parse_shape_spec, ImportOptions};
use tessera_ir::{DType, Graph, Op, Tensor, TensorData, WeightData};

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
    let m = import_model(
        &path,
        &ImportOptions {
            input_shapes,
            ..Default::default()
        },
    )
    .expect("MiniLM imports");
    let r = &m.report;
    assert_eq!(r.onnx_nodes, 354);
    assert_eq!(r.opset, 17);
    assert_eq!(r.op_histogram["MatMul"], 24);
    assert_eq!(r.op_histogram["Shape"], 31);
    assert!(
        r.folded_nodes >= 112 + 31,
        "Constant and Shape nodes all fold: {}",
        r.folded_nodes
    );
    let g = &m.graph;
    // Every shape computation folded away: no Shape-like op survives; reshapes are static.
    let count = |f: &dyn Fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    assert_eq!(count(&|o| matches!(o, Op::MatMul(_))), 24);
    assert_eq!(count(&|o| matches!(o, Op::LayerNorm(_))), 7);
    assert_eq!(count(&|o| matches!(o, Op::Softmax(_))), 3);
    // The 14 ONNX Reshapes and 34 Unsqueezes on runtime data all became static reshapes of
    // attention heads / masks; nothing with a dynamic target can exist in the IR.
    assert!(count(&|o| matches!(o, Op::Reshape(_))) >= 12);
    assert_eq!(r.dead_nodes_removed + r.canon.nodes_before, r.emitted_nodes);
    // Canonicalisation: the 3 erf-GELU chains (Div, Erf, Add, Mul, Mul) became Gelu ops;
    // the LayerNorms were native already.
    assert_eq!(r.final_nodes, r.canon.nodes_after);
    assert_eq!(
        r.canon.nodes_before - r.canon.nodes_after,
        12,
        "{:?}",
        r.canon
    );
    assert_eq!(count(&|o| matches!(o, Op::Gelu(_))), 3);
    assert_eq!(r.canon.stop_reason, "saturated");
    let out = g.tensor(g.outputs[0]);
    assert_eq!(out.shape, vec![1, 128], "output 'output' is [batch, seq]");
    let hidden = g
        .tensors
        .iter()
        .find(|t| t.name == "onnx::Shape_422")
        .expect("hidden state tensor");
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
    assert!(
        file_bytes > 60_000_000,
        "file-backed weight bytes {file_bytes}"
    );
    assert!(
        r.parameter_count > 15_000_000,
        "parameters {}",
        r.parameter_count
    );
    eprintln!("{r:#?}");

    // Run the imported graph with the runtime kernels and compare with onnxruntime 1.23
    // (values recorded from `InferenceSession.run` on the same inputs).
    let outputs = run(g, &std::fs::read(&path).unwrap());
    let pooled = &outputs[3];
    assert_eq!(pooled.shape, vec![1, 384]);
    let ort_first = [
        -0.08044852,
        0.092112,
        0.56015295,
        -0.02086667,
        -0.20688504,
        -0.7702692,
    ];
    for (got, want) in pooled.to_f64_vec().iter().zip(ort_first) {
        assert!(
            (got - want).abs() < 1e-4,
            "pooled output {got} vs onnxruntime {want}"
        );
    }
    let hidden_sum: f64 = outputs[2].to_f64_vec().iter().sum();
    assert!(
        (hidden_sum - -23.537183).abs() < 1e-2,
        "hidden-state sum {hidden_sum}"
    );
}

/// Evaluates `g` node by node with `tessera_kernels::eval`, reading file-backed
/// weights from the model bytes. Inputs: ids (k·37 mod 1000) + 100, mask 1 for the first 100.
fn run(g: &Graph, bytes: &[u8]) -> Vec<Tensor> {
    let mut vals: HashMap<u32, Tensor> = HashMap::new();
    for (id, w) in &g.weights {
        let t = match &w.data {
            WeightData::Inline { tensor } => tensor.clone(),
            WeightData::File { offset, length, .. } => {
                let b = &bytes[*offset as usize..(*offset + *length) as usize];
                match w.dtype {
                    DType::F32 => Tensor::f32(
                        w.shape.clone(),
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                    DType::I64 => Tensor::i64(
                        w.shape.clone(),
                        b.chunks_exact(8)
                            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                            .collect(),
                    ),
                    d => panic!("unexpected weight dtype {d}"),
                }
            }
        };
        vals.insert(id.0, t);
    }
    for &i in &g.inputs {
        let t = g.tensor(i);
        let n = t.shape.iter().product::<usize>() as i64;
        let v: Vec<i64> = match t.name.as_str() {
            "input_ids" => (0..n).map(|k| (k * 37) % 1000 + 100).collect(),
            _ => (0..n).map(|k| (k < 100) as i64).collect(),
        };
        vals.insert(
            i.0,
            Tensor {
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: TensorData::I64(v),
            },
        );
    }
    for n in &g.nodes {
        let ins: Vec<&Tensor> = n.inputs.iter().map(|t| &vals[&t.0]).collect();
        let outs = tessera_kernels::eval(&n.op, &ins).unwrap_or_else(|e| panic!("{}: {e}", n.name));
        for (o, t) in n.outputs.iter().zip(outs) {
            vals.insert(o.0, t);
        }
    }
    g.outputs.iter().map(|o| vals[&o.0].clone()).collect()
}
