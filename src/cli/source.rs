//! Recording the source model in a plan: its path relative to the plan and its sha256.
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use tessera_ir::plan::SourceModel;

/// The `source` of a plan written to `plan_path`: the model path relative to the plan's
/// directory when both resolve (else absolute), and the model's sha256.
pub fn source_model(model: &Path, plan_path: &Path) -> Result<SourceModel> {
    let model_abs = model
        .canonicalize()
        .with_context(|| format!("cannot resolve model path '{}'", model.display()))?;
    let plan_dir = match plan_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let path = match plan_dir.canonicalize() {
        Ok(dir) => relative_path(&model_abs, &dir).unwrap_or_else(|| model_abs.clone()),
        Err(_) => model_abs.clone(),
    };
    Ok(SourceModel {
        path: path.to_string_lossy().into_owned(),
        sha256: sha256_file(model)?,
    })
}

/// `target` relative to directory `base` (both absolute, normalised), or None when they
/// share no root (different prefixes on Windows).
fn relative_path(target: &Path, base: &Path) -> Option<PathBuf> {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    if t.first() != b.first() {
        return None;
    }
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    Some(out)
}

/// sha256 of a file, lowercase hex, read in a stream.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        let rel = |t: &str, b: &str| relative_path(Path::new(t), Path::new(b)).unwrap();
        assert_eq!(rel("/a/b/model.onnx", "/a/b"), Path::new("model.onnx"));
        assert_eq!(
            rel("/a/b/model.onnx", "/a/c/d"),
            Path::new("../../b/model.onnx")
        );
        assert_eq!(rel("/m.onnx", "/x"), Path::new("../m.onnx"));
    }

    #[test]
    fn sha256_matches_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("abc");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
