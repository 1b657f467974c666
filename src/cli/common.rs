//! Helpers shared by the subcommands: telling models from plans, loading the timings sidecar
//! of a plan (plans themselves are read by `tessera_ir::plan::Plan::read`), importing models with `--shape`, writing output.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::{import_model, parse_shape_spec, ImportOptions, ImportedModel};
use tessera_ir::plan::Timings;

/// What a positional file argument is.
pub enum Artifact {
    /// An ONNX model.
    Model(PathBuf),
    /// A Tessera plan.
    Plan(PathBuf),
}

/// Classifies `path` by extension (`.onnx` is a model; anything else is read as a plan)
/// and checks that it exists.
pub fn classify(path: &Path) -> Result<Artifact> {
    if !path.exists() {
        bail!("'{}' does not exist", path.display());
    }
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    Ok(if is_onnx {
        Artifact::Model(path.to_path_buf())
    } else {
        Artifact::Plan(path.to_path_buf())
    })
}

/// The timings sidecar of a plan: `dir/NAME.timings.json` for `dir/NAME.json`.
pub fn timings_path(plan: &Path) -> PathBuf {
    let is_json = plan.extension().is_some_and(|e| e == "json");
    let stem = if is_json {
        plan.file_stem()
    } else {
        plan.file_name()
    };
    let name = format!(
        "{}.timings.json",
        stem.map(|s| s.to_string_lossy()).unwrap_or_default()
    );
    plan.with_file_name(name)
}

/// Reads the timings sidecar of `plan` when there is one. A sidecar that cannot be read is
/// reported on stderr and ignored: timings are informational.
pub fn load_timings(plan: &Path) -> Option<Timings> {
    let path = timings_path(plan);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: ignoring timings file '{}': {e}", path.display());
            None
        }
    }
}

/// Joins repeated/comma-separated `--shape` values into import options.
pub fn import_options(shapes: &[String]) -> Result<ImportOptions> {
    let spec = shapes.join(",");
    let input_shapes = if spec.trim().is_empty() {
        Default::default()
    } else {
        parse_shape_spec(&spec)?
    };
    Ok(ImportOptions { input_shapes })
}

/// Imports a model with the given `--shape` values.
pub fn import(path: &Path, shapes: &[String]) -> Result<ImportedModel> {
    let opts = import_options(shapes)?;
    Ok(import_model(path, &opts)?)
}

/// Writes `text` to `out` (a file) or to stdout. A closed stdout (`| head`) is not an error.
pub fn emit(text: &str, out: Option<&Path>) -> Result<()> {
    if let Some(path) = out {
        return std::fs::write(path, text)
            .with_context(|| format!("cannot write '{}'", path.display()));
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Display name of a file for headings: its file name, or the path as given.
pub fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_sit_beside_the_plan() {
        assert_eq!(
            timings_path(Path::new("out/plan.json")),
            Path::new("out/plan.timings.json")
        );
        assert_eq!(
            timings_path(Path::new("plan")),
            Path::new("plan.timings.json")
        );
    }
}
