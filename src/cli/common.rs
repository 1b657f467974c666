//! Helpers shared by the subcommands: telling models from plans, writing and loading the
//! timings sidecar of a plan (plans themselves are read by `tessera_ir::plan::Plan::read`),
//! importing models with `--shape`, writing output.
//!
//! The timings sidecar rule: it is written only when the plan path is a regular file
//! (`-o /dev/null` writes no `/dev/null.timings.json`), never over one of the plan's inputs,
//! and never through a symbolic link: it is written to a new file in the same folder and
//! renamed over the sidecar path, which replaces a link there instead of following it.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::{import_model, parse_shape_spec, ImportOptions, ImportedModel};
use tessera_ir::files::{dir_of, read_regular};
use tessera_ir::plan::{Plan, Timings};

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
    if !path.exists() {
        return None;
    }
    let parsed = read_regular(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
    match parsed {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: ignoring timings file '{}': {e}", path.display());
            None
        }
    }
}

/// Writes `text` as the timings sidecar of `plan`, just written to `plan_path`, following
/// the rule in the module doc. Returns the sidecar path, or None when the plan path is not
/// a regular file and no sidecar is written.
pub fn write_timings(plan: &Plan, plan_path: &Path, text: &str) -> Result<Option<PathBuf>> {
    if !std::fs::metadata(plan_path).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let sidecar = timings_path(plan_path);
    refuse_timings_over_input(plan, plan_path)?;
    replace_file(&sidecar, text)
        .with_context(|| format!("cannot write timings '{}'", sidecar.display()))?;
    Ok(Some(sidecar))
}

/// Refuses a timings sidecar of `plan_path` that is one of the plan's inputs (its model
/// or a weight file, symbolic links resolved). Called before the plan is written, so a
/// refused compile writes nothing.
pub fn refuse_timings_over_input(plan: &Plan, plan_path: &Path) -> Result<()> {
    Ok(plan.refuse_input(plan_path, &timings_path(plan_path), "timings")?)
}

/// Writes `text` to `path` through a new file in the same folder renamed over it: a
/// symbolic link at `path` is replaced, never written through, and a reader never sees a
/// half-written file. The new file is removed if anything fails.
pub fn replace_file(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("'{}' names no file", path.display()))?;
    let dir = dir_of(path);
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(
            ".{}.{}.{attempt}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        // create_new refuses an existing path, a symbolic link included.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
            }
            Err(e) => return Err(e).context(format!("cannot create '{}'", tmp.display())),
        }
    };
    let written = file
        .write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Joins repeated/comma-separated `--shape` values into import options.
pub fn import_options(shapes: &[String]) -> Result<ImportOptions> {
    let spec = shapes.join(",");
    let input_shapes = if spec.trim().is_empty() {
        Default::default()
    } else {
        parse_shape_spec(&spec)?
    };
    Ok(ImportOptions {
        input_shapes,
        ..Default::default()
    })
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
