//! ONNX import: arbitrary bytes → `import_bytes` with the default options (parse, the
//! unsupported-op scan, constant folding, shape inference, validation and the
//! canonicalisation phase). Any outcome but a panic, abort, hang or huge allocation is fine;
//! an accepted model must also survive the IR's own consistency check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_compiler::onnx::{import_bytes, ImportOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ImportOptions::default();
    if let Ok(m) = import_bytes(data, "fuzz.onnx", &opts) {
        let _ = m.graph.validate();
    }
});
