//! The plan file contract, one home for the CLI and the runtime: [`Plan::read`] (format
//! version first), [`Plan::write`] (never over its own inputs, never a silent `null`),
//! [`Plan::verify`] (the source model and every weight file have the sha256 recorded at
//! compile time) and [`SourceModel::record`] (what the compiler records).
//!
//! Every file is opened with [`open_regular`] (a FIFO, device, socket or directory is
//! refused, never opened for reading) and every weight path is confined to the model's
//! folder with [`confine`] (relative, no `..`, inside the folder once links are resolved),
//! when recorded and when verified; [`Plan::verify_files`] returns the resolved weight
//! files so a runtime reads only the files it checked.
use super::finite::first_non_finite;
use super::{Plan, SourceModel, FORMAT_VERSION};
use crate::files::{confine, dir_of, open_regular, read_regular, FileError, LocationError};
use crate::{Graph, WeightData};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// Which input of a plan a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The ONNX model the plan was compiled from.
    SourceModel,
    /// A file weights are read from (the model itself or an external-data file).
    WeightFile,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::SourceModel => "source model",
            FileRole::WeightFile => "weight file",
        })
    }
}

/// Why a plan could not be read, written or verified. Every message is one line and names
/// the file at fault.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The plan file could not be read.
    #[error("cannot read plan '{}': {msg}", path.display())]
    Read {
        /// Plan file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// The file is not JSON, or JSON without a `format_version`.
    #[error("'{}' is not a Tessera plan: {msg}", path.display())]
    NotAPlan {
        /// Plan file.
        path: PathBuf,
        /// What is missing (serde's line and column included).
        msg: String,
    },
    /// The file has the current version but does not hold a well-formed plan.
    #[error("'{}' is not a valid Tessera plan: {msg}", path.display())]
    Invalid {
        /// Plan file.
        path: PathBuf,
        /// What is wrong (serde's line and column included).
        msg: String,
    },
    /// The plan was written by a newer Tessera.
    #[error("plan '{}' has format_version {found}, newer than this Tessera supports ({supported}); upgrade tessera", path.display())]
    NewerVersion {
        /// Plan file.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// The plan was written by an older Tessera whose format this one no longer reads.
    #[error("plan '{}' has format_version {found}, older than this Tessera reads ({supported}); recompile the model with `tessera compile`", path.display())]
    OlderVersion {
        /// Plan file.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// Writing the plan (or a file beside it) would overwrite one of the plan's inputs.
    #[error("cannot write {what} '{}': it is the plan's {role} '{}'", path.display(), input.display())]
    WouldOverwrite {
        /// What was to be written: `plan`, `timings`.
        what: &'static str,
        /// File asked for.
        path: PathBuf,
        /// Which input it is.
        role: FileRole,
        /// The input, as the plan locates it.
        input: PathBuf,
    },
    /// A float of the plan outside tensors and op attributes (a cost or search statistic)
    /// is NaN or infinite, which JSON cannot hold (tensor elements and op attributes are
    /// written as the strings `"NaN"`, `"inf"`, `"-inf"`).
    #[error("cannot write plan '{}': {what} is not a finite number, which JSON cannot hold", path.display())]
    NonFinite {
        /// Plan file.
        path: PathBuf,
        /// Where in the plan, e.g. `search.gap = NaN`.
        what: String,
    },
    /// The plan could not be serialised or written.
    #[error("cannot write plan '{}': {msg}", path.display())]
    Write {
        /// Plan file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A file the plan reads is missing or unreadable.
    #[error("{role} '{}' not found ({msg})", path.display())]
    Missing {
        /// Which input.
        role: FileRole,
        /// Resolved path.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A file the plan reads is not the one the plan was compiled from.
    #[error("{role} '{}' has sha256 {actual} but the plan was compiled from sha256 {expected}", path.display())]
    ShaMismatch {
        /// Which input.
        role: FileRole,
        /// Resolved path.
        path: PathBuf,
        /// sha256 recorded in the plan.
        expected: String,
        /// sha256 of the file on disk.
        actual: String,
    },
    /// A file the plan reads is a FIFO, a device, a socket or a directory.
    #[error("{role} '{}' is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// Which input.
        role: FileRole,
        /// Resolved path.
        path: PathBuf,
        /// What it is instead, e.g. `FIFO`.
        kind: &'static str,
    },
    /// A weight path of the plan is absolute, climbs with `..`, leaves the model's folder
    /// once links are resolved, or does not name a regular file there.
    #[error("weight file '{location}' of model '{}' {source}", model.display())]
    Location {
        /// The path as the plan gives it.
        location: String,
        /// The model whose folder weights are read from.
        model: PathBuf,
        /// Why it was refused.
        source: LocationError,
    },
    /// The plan records no sha256 for a file it reads, so the file cannot be trusted.
    #[error("the plan records no sha256 for {role} '{}'; recompile the model with `tessera compile`", path.display())]
    NoSha {
        /// Which input.
        role: FileRole,
        /// Resolved path.
        path: PathBuf,
    },
}

/// The files a verified plan reads ([`Plan::verify_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFiles {
    /// The source model, as located (it anchors the weight folder).
    pub model: PathBuf,
    /// Every weight path of the plan (as the plan gives it) with the canonical file whose
    /// sha256 was checked.
    pub weight_files: BTreeMap<String, PathBuf>,
}

/// sha256 of a regular file (see [`open_regular`]), lowercase hex, read in a stream (the
/// file is never held whole).
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut file = open_regular(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// [`sha256_file`] with the error naming the file and its role.
fn hash(role: FileRole, path: &Path) -> Result<String, PlanError> {
    sha256_file(path).map_err(|e| file_error(role, e))
}

/// A [`FileError`] as the plan error naming the file's role.
fn file_error(role: FileRole, e: FileError) -> PlanError {
    match e {
        FileError::NotRegular { path, kind } => PlanError::NotRegular { role, path, kind },
        FileError::Io { path, source } => PlanError::Missing {
            role,
            path,
            msg: source.to_string(),
        },
    }
}

/// Weight `location` confined to the folder of `model` (see [`confine`]).
fn confined(model: &Path, location: &str) -> Result<PathBuf, PlanError> {
    confine(dir_of(model), location, Some(model)).map_err(|e| match e {
        LocationError::Unresolved { source, .. } => PlanError::Missing {
            role: FileRole::WeightFile,
            path: dir_of(model).join(location),
            msg: source.to_string(),
        },
        source => PlanError::Location {
            location: location.to_string(),
            model: model.to_path_buf(),
            source,
        },
    })
}

/// The distinct paths weights of `graph` are read from (a quantised weight's scale and zero
/// point included), as the weights give them.
fn weight_paths(graph: &Graph) -> BTreeSet<&str> {
    graph
        .weights
        .values()
        .flat_map(|w| w.parts())
        .filter_map(|w| match &w.data {
            WeightData::File { path, .. } => Some(path.as_str()),
            WeightData::Inline { .. } => None,
        })
        .collect()
}

/// `path` when absolute, else `path` under `dir`.
fn under(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
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

/// A path made absolute for comparing files: canonical when it exists (symbolic links
/// resolved, so a link to the model counts as the model), else through its directory.
fn canonical_file(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    Some(dir_of(path).canonicalize().ok()?.join(name))
}

impl SourceModel {
    /// What a plan written to `plan_path` records about `model` and the weights of `graph`
    /// (imported from it): the model path relative to the plan's directory when both resolve
    /// (else absolute), the model's sha256, and the sha256 of every weight file (weight
    /// paths are confined to the model's folder, see [`confine`]). Each file is hashed once.
    pub fn record(model: &Path, plan_path: &Path, graph: &Graph) -> Result<SourceModel, PlanError> {
        let missing = |e: std::io::Error| PlanError::Missing {
            role: FileRole::SourceModel,
            path: model.to_path_buf(),
            msg: e.to_string(),
        };
        let model_abs = model.canonicalize().map_err(missing)?;
        let path = match dir_of(plan_path).canonicalize() {
            Ok(dir) => relative_path(&model_abs, &dir).unwrap_or_else(|| model_abs.clone()),
            Err(_) => model_abs.clone(),
        };
        let sha256 = hash(FileRole::SourceModel, &model_abs)?;
        let mut by_file = HashMap::from([(model_abs.clone(), sha256.clone())]);
        let mut weight_files = BTreeMap::new();
        for w in weight_paths(graph) {
            let canon = confined(&model_abs, w)?;
            let sha = match by_file.get(&canon) {
                Some(s) => s.clone(),
                None => hash(FileRole::WeightFile, &canon)?,
            };
            by_file.insert(canon, sha.clone());
            weight_files.insert(w.to_string(), sha);
        }
        Ok(SourceModel {
            path: path.to_string_lossy().into_owned(),
            sha256,
            weight_files,
        })
    }
}

/// Just the version of a plan file, read before the rest: a newer plan may not parse.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: Option<u64>,
}

impl Plan {
    /// Reads a plan file. The format version is checked before the rest is interpreted:
    /// another version than [`FORMAT_VERSION`] is refused with a message naming the file
    /// and both versions. JSON errors carry serde's line and column.
    pub fn read(path: &Path) -> Result<Plan, PlanError> {
        let read_err = |msg: String| PlanError::Read {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = read_regular(path).map_err(|e| match e {
            FileError::NotRegular { kind, .. } => {
                read_err(format!("not a regular file (it is a {kind})"))
            }
            FileError::Io { source, .. } => read_err(source.to_string()),
        })?;
        Plan::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a plan file as [`Plan::read`] does after reading them (`path`
    /// names the file in errors; nothing is opened).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Plan, PlanError> {
        let read_err = |msg: String| PlanError::Read {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| read_err(e.to_string()))?;
        let not_a_plan = |msg: String| PlanError::NotAPlan {
            path: path.to_path_buf(),
            msg,
        };
        let probe: VersionProbe =
            serde_json::from_str(text).map_err(|e| not_a_plan(format!("not JSON ({e})")))?;
        let found = probe
            .format_version
            .ok_or_else(|| not_a_plan("no format_version field".into()))?;
        let supported = FORMAT_VERSION;
        if found > u64::from(supported) {
            let path = path.to_path_buf();
            return Err(PlanError::NewerVersion {
                path,
                found,
                supported,
            });
        }
        if found < u64::from(supported) {
            let path = path.to_path_buf();
            return Err(PlanError::OlderVersion {
                path,
                found,
                supported,
            });
        }
        let invalid = |msg: String| PlanError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let plan: Plan = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        plan.check_mesh().map_err(invalid)?;
        Ok(plan)
    }

    /// Writes the plan as pretty JSON (one trailing newline; the same plan gives the same
    /// bytes). Refuses to overwrite the plan's source model or a weight file, and refuses a
    /// NaN or infinite statistic (JSON would hold `null`), naming where it is; NaN and
    /// infinite constants and op attributes round-trip as strings.
    pub fn write(&self, path: &Path) -> Result<(), PlanError> {
        self.refuse_input(path, path, "plan")?;
        if let Some(what) = first_non_finite(self) {
            let what = self.name_node(what);
            let path = path.to_path_buf();
            return Err(PlanError::NonFinite { path, what });
        }
        let write_err = |msg: String| PlanError::Write {
            path: path.to_path_buf(),
            msg,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.to_string()))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| write_err(e.to_string()))
    }

    /// Refuses `target` (`what`: `plan`, `timings`…) when it is one of the files the plan
    /// written to `plan_path` reads: its source model or a weight file (symbolic links
    /// resolved).
    pub fn refuse_input(
        &self,
        plan_path: &Path,
        target: &Path,
        what: &'static str,
    ) -> Result<(), PlanError> {
        let Some(canon) = canonical_file(target) else {
            return Ok(());
        };
        for (role, input) in self.inputs(plan_path) {
            if canonical_file(&input).is_some_and(|c| c == canon) {
                let path = target.to_path_buf();
                return Err(PlanError::WouldOverwrite {
                    what,
                    path,
                    role,
                    input,
                });
            }
        }
        Ok(())
    }

    /// `graph.nodes[i]…` as `node 'name' (Op)…`, other paths unchanged.
    fn name_node(&self, what: String) -> String {
        let node = what
            .strip_prefix("graph.nodes[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(i, tail)| Some((self.graph.nodes.get(i.parse::<usize>().ok()?)?, tail)));
        match node {
            Some((n, tail)) => format!("node '{}' ({}){tail}", n.name, n.op.name()),
            None => what,
        }
    }

    /// Where the source model is: `source_override` if given, else `source.path` resolved
    /// against the directory of the plan file at `plan_path` when relative.
    pub fn resolve_source(&self, plan_path: &Path, source_override: Option<&Path>) -> PathBuf {
        match source_override {
            Some(p) => p.to_path_buf(),
            None => under(dir_of(plan_path), &self.source.path),
        }
    }

    /// The files this plan (at `plan_path`) reads: its source model, then every weight
    /// file (relative weight paths are under the model's directory).
    fn inputs(&self, plan_path: &Path) -> Vec<(FileRole, PathBuf)> {
        let mut out = Vec::new();
        if self.source.path.is_empty() {
            return out;
        }
        let model = self.resolve_source(plan_path, None);
        for w in weight_paths(&self.graph) {
            out.push((FileRole::WeightFile, under(dir_of(&model), w)));
        }
        out.insert(0, (FileRole::SourceModel, model));
        out
    }

    /// Checks that the source model (`source_override`, else the recorded path relative
    /// to `plan_path`) and every weight file exist and have the sha256 recorded in the plan.
    /// A missing or empty recorded sha256 is an error, never a skipped check. Returns the
    /// model path, which anchors relative weight paths. Each file is hashed once. See
    /// [`Plan::verify_files`].
    pub fn verify(
        &self,
        plan_path: &Path,
        source_override: Option<&Path>,
    ) -> Result<PathBuf, PlanError> {
        Ok(self.verify_files(plan_path, source_override)?.model)
    }

    /// [`Plan::verify`], returning every file it checked: the model and, for each weight
    /// path, the canonical file it resolves to inside the model's folder ([`confine`]:
    /// relative, no `..`, no link out of the folder, a regular file). A runtime that reads
    /// weights only through these paths reads only files whose sha256 was checked.
    pub fn verify_files(
        &self,
        plan_path: &Path,
        source_override: Option<&Path>,
    ) -> Result<VerifiedFiles, PlanError> {
        let model = self.resolve_source(plan_path, source_override);
        let meta = std::fs::metadata(&model).map_err(|e| PlanError::Missing {
            role: FileRole::SourceModel,
            path: model.clone(),
            msg: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(PlanError::NotRegular {
                role: FileRole::SourceModel,
                path: model,
                kind: crate::files::kind_of(&meta),
            });
        }
        let mut by_file: HashMap<PathBuf, String> = HashMap::new();
        check(
            FileRole::SourceModel,
            &model,
            &self.source.sha256,
            &mut by_file,
        )?;
        let mut weight_files = BTreeMap::new();
        for w in weight_paths(&self.graph) {
            let file = confined(&model, w)?;
            let expected = self.source.weight_files.get(w).map_or("", String::as_str);
            check(FileRole::WeightFile, &file, expected, &mut by_file)?;
            weight_files.insert(w.to_string(), file);
        }
        Ok(VerifiedFiles {
            model,
            weight_files,
        })
    }
}

/// Checks one file against its recorded sha256; `by_file` caches hashes by canonical path.
fn check(
    role: FileRole,
    file: &Path,
    expected: &str,
    by_file: &mut HashMap<PathBuf, String>,
) -> Result<(), PlanError> {
    if expected.is_empty() {
        let path = file.to_path_buf();
        return Err(PlanError::NoSha { role, path });
    }
    let canon = file.canonicalize().map_err(|e| PlanError::Missing {
        role,
        path: file.to_path_buf(),
        msg: e.to_string(),
    })?;
    let actual = match by_file.get(&canon) {
        Some(s) => s.clone(),
        None => hash(role, &canon)?,
    };
    by_file.insert(canon, actual.clone());
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(PlanError::ShaMismatch {
            role,
            path: file.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        let rel = |t: &str, b: &str| relative_path(Path::new(t), Path::new(b));
        assert_eq!(
            rel("/a/b/model.onnx", "/a/b").as_deref(),
            Some(Path::new("model.onnx"))
        );
        assert_eq!(
            rel("/a/b/model.onnx", "/a/c/d").as_deref(),
            Some(Path::new("../../b/model.onnx"))
        );
        assert_eq!(
            rel("/m.onnx", "/x").as_deref(),
            Some(Path::new("../m.onnx"))
        );
    }

    #[test]
    fn weight_paths_resolve_under_the_model_directory() {
        assert_eq!(under(Path::new("/m"), "w.bin"), Path::new("/m/w.bin"));
        assert_eq!(
            under(Path::new("/m"), "/abs/w.bin"),
            Path::new("/abs/w.bin")
        );
        assert_eq!(dir_of(Path::new("plan.json")), Path::new("."));
        // (`under` only locates inputs for the overwrite check; reading confines.)
        assert_eq!(dir_of(Path::new("out/plan.json")), Path::new("out"));
    }
}
