//! Plan load: arbitrary bytes → `Plan::from_bytes` (format-version probe, JSON, mesh/rank
//! consistency) → the runtime's `validate_plan` (ids, sizes, inline tensors, definitions,
//! collective matching) → `Plan::verify_files` against a fixed model file in a temporary
//! folder (weight paths confined to it, sha256 checks). Nothing is executed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tessera_ir::plan::Plan;
use tessera_runtime::exec::validate::validate_plan;

/// A folder holding `model.onnx` (a few bytes) and `w.bin`, kept for the whole run.
fn folder() -> &'static (tempfile::TempDir, PathBuf) {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"not really a model").expect("write model");
        std::fs::write(dir.path().join("w.bin"), [0u8; 64]).expect("write weights");
        (dir, model)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, model) = folder();
    let plan_path = dir.path().join("plan.json");
    let Ok(plan) = Plan::from_bytes(data, Path::new("fuzz.json")) else {
        return;
    };
    if validate_plan(&plan).is_err() {
        return;
    }
    let _ = plan.verify_files(&plan_path, Some(model));
});
