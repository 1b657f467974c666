//! `.npy` reading: arbitrary bytes → the runtime's `read_npy_from` (header, dtype, shape,
//! element data) as `tessera-run --input` reads a file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_runtime::npy::read_npy_from;

fuzz_target!(|data: &[u8]| {
    let _ = read_npy_from(data, Path::new("fuzz.npy"));
});
