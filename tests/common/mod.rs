//! Helpers shared by the workspace-level tests: locating test data, reading `.npy` files.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use tessera_ir::{DType, Tensor};

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

/// Reads an `.npy` file (f32, f64, i64, i32, bool) into a host tensor.
pub fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.header().dtype().descr().trim_matches('\'').to_string();
    match descr.as_str() {
        "<f4" => Tensor::f32(shape, npy.into_vec::<f32>().unwrap()),
        "<f8" => Tensor::f32(
            shape,
            npy.into_vec::<f64>()
                .unwrap()
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        "<i8" => Tensor::i64(shape, npy.into_vec::<i64>().unwrap()),
        "<i4" => {
            let mut t = Tensor::i64(
                shape,
                npy.into_vec::<i32>()
                    .unwrap()
                    .into_iter()
                    .map(i64::from)
                    .collect(),
            );
            t.dtype = DType::I32;
            t
        }
        "|b1" => Tensor::bool(shape, npy.into_vec::<bool>().unwrap()),
        d => panic!("{}: unsupported npy dtype {d}", path.display()),
    }
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
