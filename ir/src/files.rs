//! Opening the files a model or a plan reads, shared by the compiler and the runtime:
//!
//! * [`open_regular`] opens only regular files: a FIFO, a device, a socket or a directory
//!   is refused before it is opened (opening a FIFO would block forever), and again on
//!   the opened descriptor (the open itself is non-blocking on unix, so a file swapped for
//!   a FIFO in between cannot hang it either);
//! * [`confine`] resolves a weight location (an ONNX external-data `location`, or the path
//!   a plan's weight entry names) the way onnxruntime does: it must be relative, have no
//!   `..` component, and after symbolic links are resolved stay inside the model's folder.
//!   The model file itself (the home of `raw_data` initializers) is always allowed, even
//!   when it is a link to a file elsewhere;
//! * [`create_regular`] creates a file to write (an output `.npy`) without following a
//!   symbolic link and without blocking on a FIFO.
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// A file could not be opened as a regular file.
#[derive(Debug, Error)]
pub enum FileError {
    /// The path exists but is a FIFO, a device, a socket or a directory.
    #[error("'{}' is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead, e.g. `FIFO`.
        kind: &'static str,
    },
    /// The OS refused to stat, open or read the file.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a weight location was refused. Displays as the end of a sentence that names the
/// location, the weight and the model (the caller's error does).
#[derive(Debug, Error)]
pub enum LocationError {
    /// The location is the empty string.
    #[error("is empty")]
    Empty,
    /// The location is an absolute path.
    #[error("is absolute; it must be relative to the model's folder")]
    Absolute,
    /// The location has a `..` component.
    #[error("has a '..' component; it must stay inside the model's folder")]
    ParentDir,
    /// After resolving symbolic links the file lies outside the model's folder.
    #[error("resolves to '{}', outside the model's folder '{}'", resolved.display(), dir.display())]
    Escapes {
        /// The canonical path of the file.
        resolved: PathBuf,
        /// The canonical model folder.
        dir: PathBuf,
    },
    /// The file (or the model folder) cannot be resolved.
    #[error("cannot be resolved in '{}': {source}", dir.display())]
    Unresolved {
        /// The model folder.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a regular file.
    #[error("is not a regular file (it is a {kind})")]
    NotRegular {
        /// What it is instead, e.g. `FIFO`.
        kind: &'static str,
    },
}

/// What kind of file `meta` describes, in words, for errors.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut kinds = vec![
        (ft.is_file(), "regular file"),
        (ft.is_dir(), "directory"),
        (ft.is_symlink(), "symbolic link"),
    ];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        kinds.extend([
            (ft.is_fifo(), "FIFO"),
            (ft.is_socket(), "socket"),
            (ft.is_char_device(), "character device"),
            (ft.is_block_device(), "block device"),
        ]);
    }
    kinds
        .into_iter()
        .find_map(|(is, kind)| is.then_some(kind))
        .unwrap_or("special file")
}

/// Opens `path` for reading only if it is a regular file (symbolic links followed). The
/// type is checked with metadata before opening and again on the opened descriptor; on
/// unix the open is non-blocking, so it cannot hang on a FIFO swapped in between.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |meta: &Metadata| FileError::NotRegular {
        path: path.to_path_buf(),
        kind: kind_of(meta),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK only changes how a FIFO or device opens; reads of a regular file
        // are unaffected.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}

/// Creates `path` for writing, or truncates it, only if it is absent or a regular file: a
/// symbolic link is refused, never written through (on unix the open itself does not
/// follow a final link, so a link swapped in between is refused too), and a FIFO or
/// device is refused before it could block (the open is non-blocking on unix). The
/// error for such a path says what it is.
pub fn create_regular(path: &Path) -> std::io::Result<File> {
    let not_regular = |meta: &Metadata| {
        std::io::Error::other(format!("not a regular file (it is a {})", kind_of(meta)))
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(&meta)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}

/// Reads a whole regular file (see [`open_regular`]).
pub fn read_regular(path: &Path) -> Result<Vec<u8>, FileError> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// The lexical rule: `location` is non-empty, relative and has no `..` component.
pub fn check_location(location: &str) -> Result<&Path, LocationError> {
    if location.is_empty() {
        return Err(LocationError::Empty);
    }
    let p = Path::new(location);
    let mut components = p.components();
    if p.is_absolute() || p.has_root() {
        return Err(LocationError::Absolute);
    }
    if components.any(|c| matches!(c, Component::ParentDir | Component::Prefix(_))) {
        return Err(LocationError::ParentDir);
    }
    Ok(p)
}

/// The directory of a file path (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Resolves weight `location` inside folder `dir`: it must pass [`check_location`], exist,
/// be a regular file and, once symbolic links are resolved, lie inside `dir` (also
/// resolved) — or be `model` itself (when given), the file `raw_data` weights live in.
/// Returns the canonical path.
pub fn confine(dir: &Path, location: &str, model: Option<&Path>) -> Result<PathBuf, LocationError> {
    let rel = check_location(location)?;
    let unresolved = |source| LocationError::Unresolved {
        dir: dir.to_path_buf(),
        source,
    };
    let canon_dir = dir.canonicalize().map_err(unresolved)?;
    let resolved = canon_dir.join(rel).canonicalize().map_err(unresolved)?;
    let is_model = model
        .and_then(|m| m.canonicalize().ok())
        .is_some_and(|m| m == resolved);
    if !is_model && !resolved.starts_with(&canon_dir) {
        return Err(LocationError::Escapes {
            resolved,
            dir: canon_dir,
        });
    }
    let meta = std::fs::metadata(&resolved).map_err(unresolved)?;
    if !meta.is_file() {
        return Err(LocationError::NotRegular {
            kind: kind_of(&meta),
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_must_be_relative_without_parent_components() {
        assert!(check_location("w.bin").is_ok());
        assert!(check_location("sub/./w.bin").is_ok());
        assert!(matches!(check_location(""), Err(LocationError::Empty)));
        assert!(matches!(
            check_location("/etc/passwd"),
            Err(LocationError::Absolute)
        ));
        assert!(matches!(
            check_location("../w.bin"),
            Err(LocationError::ParentDir)
        ));
        assert!(matches!(
            check_location("a/../../w.bin"),
            Err(LocationError::ParentDir)
        ));
    }

    #[test]
    fn confine_follows_links_and_stays_inside() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("w.bin"), b"abcd").unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        let ok = confine(&dir, "w.bin", None).unwrap();
        assert_eq!(ok, dir.join("w.bin").canonicalize().unwrap());
        let e = confine(&dir, "missing.bin", None).unwrap_err();
        assert!(matches!(e, LocationError::Unresolved { .. }), "{e}");
        let e = confine(&dir, ".", None).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outer.path().join("secret"), dir.join("link")).unwrap();
            let e = confine(&dir, "link", None).unwrap_err();
            assert!(e.to_string().contains("outside the model's folder"), "{e}");
            // The model itself may be a link to a file elsewhere.
            let model = dir.join("link");
            assert!(confine(&dir, "link", Some(&model)).is_ok());
        }
    }
}
