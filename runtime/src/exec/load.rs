//! Reading a plan file and locating and verifying its source model.
use super::error::ExecError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tessera_ir::plan::{Plan, FORMAT_VERSION};

/// Reads and parses a plan file. A newer `format_version` is refused before the rest of the
/// plan is interpreted; JSON errors name the file and serde's line and column.
pub fn load_plan(path: &Path) -> Result<Plan, ExecError> {
    let file_err = |msg: String| ExecError::PlanFile {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    // Look at the version first: a newer plan may not parse with this runtime's types.
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| file_err(format!("invalid JSON: {e}")))?
        .get("format_version")
        .and_then(|v| v.as_u64());
    if let Some(v) = version {
        if v > FORMAT_VERSION as u64 {
            return Err(ExecError::FormatVersion {
                found: v.min(u32::MAX as u64) as u32,
                supported: FORMAT_VERSION,
            });
        }
    }
    serde_json::from_str(&text).map_err(|e| file_err(format!("not a valid plan: {e}")))
}

/// Where the source model is: `override_path` if given, else `plan.source.path`, resolved
/// relative to the plan file's directory when relative.
pub fn resolve_source(plan: &Plan, plan_path: &Path, override_path: Option<&Path>) -> PathBuf {
    if let Some(p) = override_path {
        return p.to_path_buf();
    }
    let p = Path::new(&plan.source.path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        plan_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// sha256 of a file, lowercase hex, read in chunks (the file is never held whole).
pub fn sha256_file(path: &Path) -> Result<String, ExecError> {
    let missing = |e: std::io::Error| ExecError::SourceMissing {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(missing)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(missing)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks that the model at `path` exists and has the sha256 the plan was compiled from.
/// An empty `expected` (a plan built in memory) skips the hash check.
pub fn verify_source(path: &Path, expected: &str) -> Result<(), ExecError> {
    if !path.is_file() {
        return Err(ExecError::SourceMissing {
            path: path.to_path_buf(),
            msg: "no such file".into(),
        });
    }
    if expected.is_empty() {
        return Ok(());
    }
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ExecError::ShaMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}
