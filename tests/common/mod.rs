//! Helpers shared by the workspace-level tests: locating test data, reading `.npy` files.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use tessera_ir::Tensor;

pub mod backend_case;
pub mod generated;

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched models directory (`$TESSERA_MODELS` or `.cache/models`), if it holds `file`.
pub fn cached_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var("TESSERA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/models"));
    let p = dir.join(file);
    p.is_file().then_some(p)
}

/// Reads an `.npy` file with the runtime's reader (panics with the file's error in tests).
pub fn read_npy(path: &Path) -> Tensor {
    tessera_runtime::npy::read_npy(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every `PREFIX<name>.npy` of `dir`, by name (`input_` / `ort_output_` files of a model's
/// reference folder).
pub fn npys(dir: &Path, prefix: &str) -> std::collections::BTreeMap<String, Tensor> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("dir entry").path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if let Some(name) = file
            .strip_prefix(prefix)
            .and_then(|f| f.strip_suffix(".npy"))
        {
            out.insert(name.to_string(), read_npy(&path));
        }
    }
    out
}

/// The largest max-abs difference between a plan's outputs `got` and the reference outputs
/// `want` (by sanitised output name, as `ort_output_<name>.npy` files hold them).
pub fn worst_output_diff(
    plan: &tessera_ir::plan::Plan,
    got: &[Tensor],
    want: &std::collections::BTreeMap<String, Tensor>,
) -> f64 {
    let mut worst = 0f64;
    for (t, value) in plan.graph.outputs.iter().zip(got) {
        let name = &plan.graph.tensor(*t).name;
        let reference = want
            .get(&sanitize(name))
            .unwrap_or_else(|| panic!("no onnxruntime output '{name}'"));
        worst = worst.max(max_abs_diff(value, reference));
    }
    worst
}

/// Runs the `tessera` binary; returns (exit code, stdout, stderr).
pub fn tessera(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera");
    let code = out
        .status
        .code()
        .expect("tessera exited normally, not by a signal");
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Max absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape, b.shape, "shapes differ");
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Output file name used by scripts/fetch_models.py for an output name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Stored bytes of a graph's weight matrices and tables (two or more axes over 1) and of its
/// vectors (norm scales, biases), which a plan may keep replicated.
pub fn matrix_and_vector_bytes(graph: &tessera_ir::Graph) -> (u64, u64) {
    graph.weights.values().fold((0u64, 0u64), |(m, v), w| {
        let b = w.size_bytes() as u64;
        if w.shape.iter().filter(|&&d| d > 1).count() > 1 {
            (m + b, v)
        } else {
            (m, v + b)
        }
    })
}

/// The largest parameter bytes any rank of `plan` holds.
pub fn max_param_bytes(plan: &tessera_ir::plan::Plan) -> u64 {
    plan.estimates
        .iter()
        .map(|e| e.param_bytes)
        .max()
        .unwrap_or(0)
}

/// The model imported at the shapes of its sample inputs (`input_*.npy` in `dir`), and
/// those inputs.
#[allow(dead_code)]
pub fn import_at_inputs(
    model: &Path,
    dir: &Path,
) -> (
    tessera_ir::Graph,
    std::collections::BTreeMap<String, Tensor>,
) {
    use tessera_compiler::onnx::{import_model, ImportOptions};
    let inputs = npys(dir, "input_");
    let imported = import_model(
        model,
        &ImportOptions {
            input_shapes: inputs
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect(),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: import: {e}", model.display()));
    (imported.graph, inputs)
}
