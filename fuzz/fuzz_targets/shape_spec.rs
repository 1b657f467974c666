//! `--shape` strings: arbitrary text → `parse_shape_spec`; a parsed spec is then applied to
//! the embedded MLP example (input `x`, `[batch, 64]`) through the whole import, as
//! `tessera compile --shape` does (caps on sizes, dims that conflict with the model).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_compiler::onnx::{import_bytes, parse_shape_spec, ImportOptions};

/// The MLP example's graph with its weights as (absent) external data: small, and
/// `import_bytes` never opens external files.
const MODEL: &[u8] = include_bytes!("../models/mlp_graph.onnx");

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(shapes) = parse_shape_spec(spec) else {
        return;
    };
    let opts = ImportOptions {
        input_shapes: shapes,
        ..ImportOptions::default()
    };
    let _ = import_bytes(MODEL, "mlp.onnx", &opts);
});
