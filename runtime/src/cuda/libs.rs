//! Finding NVRTC, cuBLAS and NCCL where they are really installed, and opening them.
//!
//! cudarc (`dynamic-loading`) opens each library by bare file name (`libnccl.so`,
//! `libnccl.so.13`, `.12`, `.11`, `.10`, `.9`, `.1`, ... see `cudarc::get_lib_name_candidates`)
//! through the dynamic loader, so it only sees directories the loader searches
//! (`LD_LIBRARY_PATH` as it was at process start, `ld.so.cache`, the default paths). Two
//! common installations are missed:
//!
//! * NCCL ships as `libnccl.so.2` (pip wheel `nvidia-nccl-cu12`, Debian `libnccl2` without
//!   `-dev`): not one of cudarc's names, wherever it is;
//! * pip wheels put cuBLAS and NVRTC under `site-packages/nvidia/<pkg>/lib` (CUDA 12:
//!   `nvidia/cublas/lib`, `nvidia/cuda_nvrtc/lib`; CUDA 13: `nvidia/cu13/lib`), which the loader
//!   does not search.
//!
//! What works with cudarc's loader: glibc's `dlopen` of a bare name first looks among the
//! objects already loaded, matching their `DT_SONAME`. So once `libcublas.so.12` was opened
//! here by absolute path (and kept open for the life of the process), cudarc's
//! `dlopen("libcublas.so.12")` returns that object instead of searching the filesystem.
//! Changing `LD_LIBRARY_PATH` at run time would not work (the loader reads it at start),
//! and symlinks would need a writable directory on the loader's path. For cuBLAS (`.so.12`,
//! `.so.13`) and NVRTC the soname is one of cudarc's names, so preloading suffices; for
//! NCCL (`libnccl.so.2`) it is not, so NCCL is not called through cudarc at all:
//! [`super::nccl`] resolves its symbols from the library opened here.
//!
//! Search order for each library (first file found wins):
//! 1. `TESSERA_<LIB>_LIB` (e.g. `TESSERA_NCCL_LIB`): a file or a directory. When set, only it
//!    is searched.
//! 2. `TESSERA_CUDA_LIB_DIR`: `:`-separated directories.
//! 3. `LD_LIBRARY_PATH`.
//! 4. Python packages: `$VIRTUAL_ENV`, `$CONDA_PREFIX`, `~/.local`, `/usr/local`, `/usr`
//!    (`lib/python3*/{site,dist}-packages`), `/usr/lib/python3/dist-packages` and
//!    `PYTHONPATH`, each with the wheel's `nvidia/<pkg>/lib`.
//! 5. `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda` (`lib64`, `lib`,
//!    `targets/<arch>-linux/lib`), then `/usr/local/cuda-*` newest first.
//! 6. Debian/Red Hat paths: `/usr/lib/<arch>-linux-gnu`, `/usr/lib64`, `/usr/lib`,
//!    `/lib/<arch>-linux-gnu`.
//!
//! Built-in absolute paths are joined under [`LibSearch::root`] (`/` in a real run) so that
//! tests can lay out fake installations in a temporary directory.
use super::CudaError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Variable naming directories searched before everything else but per-library overrides.
pub const ENV_LIB_DIR: &str = "TESSERA_CUDA_LIB_DIR";

/// A CUDA library the backend opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CudaLib {
    /// The runtime compiler (kernels).
    Nvrtc,
    /// cuBLAS (matmuls).
    Cublas,
    /// cuBLASLt, which cuBLAS loads (opened first from cuBLAS's directory when present).
    CublasLt,
    /// NCCL (multi-process collectives).
    Nccl,
}

impl CudaLib {
    /// Short name (`nccl`), as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            CudaLib::Nvrtc => "nvrtc",
            CudaLib::Cublas => "cublas",
            CudaLib::CublasLt => "cublasLt",
            CudaLib::Nccl => "nccl",
        }
    }

    /// The per-library override variable (`TESSERA_NCCL_LIB`, ...).
    pub fn env_var(self) -> &'static str {
        match self {
            CudaLib::Nvrtc => "TESSERA_NVRTC_LIB",
            CudaLib::Cublas => "TESSERA_CUBLAS_LIB",
            CudaLib::CublasLt => "TESSERA_CUBLASLT_LIB",
            CudaLib::Nccl => "TESSERA_NCCL_LIB",
        }
    }

    /// File names looked for in each directory, preferred first: the names the libraries
    /// ship with (soname first), then the unversioned development link.
    pub fn file_names(self) -> Vec<String> {
        let stem = format!("lib{}.so", self.name());
        let majors: &[&str] = match self {
            CudaLib::Nccl => &["2"],
            _ => &["13", "12", "11"],
        };
        let mut v: Vec<String> = majors.iter().map(|m| format!("{stem}.{m}")).collect();
        v.push(stem);
        v
    }

    /// Subdirectories of a Python `site-packages` where NVIDIA's wheels put the library.
    pub fn wheel_dirs(self) -> &'static [&'static str] {
        match self {
            CudaLib::Nvrtc => &["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"],
            CudaLib::Cublas | CudaLib::CublasLt => &["nvidia/cu13/lib", "nvidia/cublas/lib"],
            CudaLib::Nccl => &["nvidia/nccl/lib", "nvidia/cu13/lib"],
        }
    }
}

/// Where to look: the environment and the filesystem root of built-in paths.
#[derive(Debug, Clone)]
pub struct LibSearch {
    /// Environment variables consulted (see the module notes).
    pub env: HashMap<String, String>,
    /// Prefix of built-in absolute paths (`/` in a real run, a temporary directory in tests).
    pub root: PathBuf,
}

/// A library found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// The directories searched up to and including the one holding it.
    pub searched: Vec<PathBuf>,
}

impl LibSearch {
    /// The process environment and the real filesystem.
    pub fn from_process() -> LibSearch {
        LibSearch {
            env: std::env::vars().collect(),
            root: PathBuf::from("/"),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn rooted(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The directories searched for `lib`, in order, without duplicates (directories that do
    /// not exist included: the error message lists them all).
    pub fn dirs(&self, lib: CudaLib) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let split = |s: &str| -> Vec<PathBuf> {
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        };
        if let Some(v) = self.var(ENV_LIB_DIR) {
            out.extend(split(v));
        }
        if let Some(v) = self.var("LD_LIBRARY_PATH") {
            out.extend(split(v));
        }
        for site in self.site_packages() {
            out.extend(lib.wheel_dirs().iter().map(|w| site.join(w)));
        }
        for home in self.cuda_homes() {
            out.push(home.join("lib64"));
            out.push(home.join("lib"));
            for arch in ["x86_64", "sbsa", "aarch64"] {
                out.push(home.join(format!("targets/{arch}-linux/lib")));
            }
        }
        for p in [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/lib/x86_64-linux-gnu",
            "/lib/aarch64-linux-gnu",
        ] {
            out.push(self.rooted(p));
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(p.clone()));
        out
    }

    /// Python package directories: virtualenv, conda, user, system, `PYTHONPATH`.
    fn site_packages(&self) -> Vec<PathBuf> {
        let mut prefixes: Vec<PathBuf> = Vec::new();
        for v in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            if let Some(p) = self.var(v) {
                prefixes.push(PathBuf::from(p));
            }
        }
        if let Some(h) = self.var("HOME") {
            prefixes.push(Path::new(h).join(".local"));
        }
        prefixes.push(self.rooted("/usr/local"));
        prefixes.push(self.rooted("/usr"));
        let mut out = Vec::new();
        for pre in prefixes {
            let lib = pre.join("lib");
            for py in sorted_entries(&lib, |n| n.starts_with("python3")) {
                out.push(py.join("site-packages"));
                out.push(py.join("dist-packages"));
            }
        }
        out.push(self.rooted("/usr/lib/python3/dist-packages"));
        if let Some(v) = self.var("PYTHONPATH") {
            out.extend(v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from));
        }
        out
    }

    /// CUDA toolkit roots: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`, `/usr/local/cuda-*`.
    fn cuda_homes(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(|v| self.var(v).map(PathBuf::from))
            .collect();
        out.push(self.rooted("/usr/local/cuda"));
        let mut versioned = sorted_entries(&self.rooted("/usr/local"), |n| n.starts_with("cuda-"));
        versioned.reverse(); // newest first (cuda-13.0 after cuda-12.8 in name order)
        out.extend(versioned);
        out
    }

    /// Finds `lib`: the per-library override alone when set, else the first directory of
    /// [`LibSearch::dirs`] holding one of [`CudaLib::file_names`].
    pub fn find(&self, lib: CudaLib) -> Result<Found, CudaError> {
        let names = lib.file_names();
        if let Some(o) = self.var(lib.env_var()) {
            let p = PathBuf::from(o);
            if p.is_file() {
                return Ok(Found {
                    path: p,
                    searched: vec![],
                });
            }
            if let Some(f) = names.iter().map(|n| p.join(n)).find(|f| f.is_file()) {
                return Ok(Found {
                    path: f,
                    searched: vec![p],
                });
            }
            return Err(not_found(lib, &names, &[p], Some(lib.env_var())));
        }
        let dirs = self.dirs(lib);
        for (i, d) in dirs.iter().enumerate() {
            if let Some(f) = names.iter().map(|n| d.join(n)).find(|f| f.is_file()) {
                return Ok(Found {
                    path: f,
                    searched: dirs[..=i].to_vec(),
                });
            }
        }
        Err(not_found(lib, &names, &dirs, None))
    }
}

/// Entries of `dir` whose file name passes `keep`, sorted by name (none if unreadable).
fn sorted_entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_some_and(&keep))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn not_found(lib: CudaLib, names: &[String], dirs: &[PathBuf], var: Option<&str>) -> CudaError {
    let listed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let hint = match var {
        Some(v) => format!("{v} is set, so only it was searched"),
        None => format!(
            "set {} to the file, or {ENV_LIB_DIR} to its directory",
            lib.env_var()
        ),
    };
    CudaError::MissingLibrary {
        lib: lib.name().into(),
        msg: format!(
            "looked for {} in {}; {hint}",
            names.join(", "),
            listed.join(", ")
        ),
    }
}

/// A library opened by absolute path and kept open for the life of the process.
pub struct Opened {
    /// The file opened.
    pub path: PathBuf,
    /// The handle (never closed: cudarc and [`super::nccl`] keep using its symbols).
    pub lib: libloading::Library,
}

/// Per-library result of [`open`], computed once per process.
type OpenCell = OnceLock<Result<Opened, String>>;

fn cell(lib: CudaLib) -> &'static OpenCell {
    static NVRTC: OpenCell = OnceLock::new();
    static CUBLAS: OpenCell = OnceLock::new();
    static CUBLASLT: OpenCell = OnceLock::new();
    static NCCL: OpenCell = OnceLock::new();
    match lib {
        CudaLib::Nvrtc => &NVRTC,
        CudaLib::Cublas => &CUBLAS,
        CudaLib::CublasLt => &CUBLASLT,
        CudaLib::Nccl => &NCCL,
    }
}

/// Opens `path` with `RTLD_NOW | RTLD_GLOBAL`.
fn dlopen_global(path: &Path) -> Result<libloading::Library, String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a shared library runs its initialisers; the CUDA libraries' are
    // the ones cudarc would run when loading them itself. The path is a regular file found
    // by the search above.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map(libloading::Library::from)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Opens the companions a library loads by bare name from its own directory (cuBLASLt for
/// cuBLAS, `libnvrtc-builtins` for NVRTC), so that those bare-name loads find them already
/// loaded. Missing companions are not an error here (the library reports it when used).
fn open_companions(lib: CudaLib, dir: &Path) {
    let prefix = match lib {
        CudaLib::Cublas => "libcublasLt.so",
        CudaLib::Nvrtc => "libnvrtc-builtins.so",
        _ => return,
    };
    for p in sorted_entries(dir, |n| n.starts_with(prefix)) {
        if let Ok(l) = dlopen_global(&p) {
            // Kept open for the process lifetime, as the library that needs it.
            std::mem::forget(l);
            break;
        }
    }
}

/// Finds and opens `lib` once per process (see the module notes) and returns it.
pub fn open(lib: CudaLib) -> Result<&'static Opened, CudaError> {
    let r = cell(lib).get_or_init(|| {
        let found = LibSearch::from_process().find(lib).map_err(|e| match e {
            CudaError::MissingLibrary { msg, .. } => msg,
            other => other.to_string(),
        })?;
        if let Some(dir) = found.path.parent() {
            open_companions(lib, dir);
        }
        Ok(Opened {
            lib: dlopen_global(&found.path)?,
            path: found.path,
        })
    });
    r.as_ref().map_err(|msg| CudaError::MissingLibrary {
        lib: lib.name().into(),
        msg: msg.clone(),
    })
}

/// Makes `lib` (NVRTC or cuBLAS) loadable by cudarc: nothing to do when cudarc's own names
/// already resolve and no override is set; otherwise the library is found and preloaded by
/// absolute path, then cudarc's lookup is checked again.
pub fn prepare_for_cudarc(lib: CudaLib, cudarc_finds: impl Fn() -> bool) -> Result<(), CudaError> {
    let overridden =
        std::env::var_os(lib.env_var()).is_some() || std::env::var_os(ENV_LIB_DIR).is_some();
    if !overridden && cudarc_finds() {
        return Ok(());
    }
    let opened = open(lib)?;
    if cudarc_finds() {
        Ok(())
    } else {
        Err(CudaError::MissingLibrary {
            lib: lib.name().into(),
            msg: format!(
                "{} was opened, but its soname is not one of the names cudarc loads ({}); \
                 point {ENV_LIB_DIR} at a CUDA 12 or 13 installation",
                opened.path.display(),
                cudarc::get_lib_name_candidates(lib.name()).join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) -> PathBuf {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("a file under root has a parent"))
            .expect("create dirs");
        fs::write(&p, b"").expect("write");
        p
    }

    fn search(root: &Path, env: &[(&str, String)]) -> LibSearch {
        LibSearch {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            root: root.to_path_buf(),
        }
    }

    #[test]
    fn nccl_so_2_from_a_pip_wheel_in_a_virtualenv() {
        let t = tempfile::tempdir().expect("tempdir");
        let venv = t.path().join("venv");
        let want = touch(
            &venv,
            "lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2",
        );
        let s = search(t.path(), &[("VIRTUAL_ENV", venv.display().to_string())]);
        assert_eq!(s.find(CudaLib::Nccl).expect("found").path, want);
        // The same wheel installed system-wide (dist-packages under /usr/local).
        let t2 = tempfile::tempdir().expect("tempdir");
        let want2 = touch(
            t2.path(),
            "usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2",
        );
        assert_eq!(
            search(t2.path(), &[])
                .find(CudaLib::Nccl)
                .expect("found")
                .path,
            want2
        );
    }

    #[test]
    fn debian_and_toolkit_layouts() {
        let t = tempfile::tempdir().expect("tempdir");
        let nccl = touch(t.path(), "usr/lib/x86_64-linux-gnu/libnccl.so.2");
        let blas = touch(t.path(), "usr/local/cuda/lib64/libcublas.so.12");
        let rtc = touch(
            t.path(),
            "usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13",
        );
        touch(t.path(), "usr/local/cuda-12.4/lib64/libnvrtc.so.12");
        let s = search(t.path(), &[]);
        assert_eq!(s.find(CudaLib::Nccl).expect("nccl").path, nccl);
        assert_eq!(s.find(CudaLib::Cublas).expect("cublas").path, blas);
        // Newest versioned toolkit first.
        assert_eq!(s.find(CudaLib::Nvrtc).expect("nvrtc").path, rtc);
    }

    #[test]
    fn cuda13_wheel_and_ld_library_path_order() {
        let t = tempfile::tempdir().expect("tempdir");
        let wheel = touch(
            t.path(),
            "usr/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
        );
        let s = search(t.path(), &[]);
        assert_eq!(s.find(CudaLib::Cublas).expect("wheel").path, wheel);
        // LD_LIBRARY_PATH comes before Python packages.
        let ld = touch(t.path(), "opt/ld/libcublas.so.12");
        let s = search(
            t.path(),
            &[(
                "LD_LIBRARY_PATH",
                format!("/nonexistent:{}", t.path().join("opt/ld").display()),
            )],
        );
        let f = s.find(CudaLib::Cublas).expect("ld");
        assert_eq!(f.path, ld);
        assert_eq!(f.searched.len(), 2, "{:?}", f.searched);
    }

    #[test]
    fn overrides_file_directory_and_lib_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        touch(t.path(), "usr/lib/libnccl.so.2");
        let mine = touch(t.path(), "custom/libnccl.so");
        let file = search(
            t.path(),
            &[("TESSERA_NCCL_LIB", mine.display().to_string())],
        );
        assert_eq!(file.find(CudaLib::Nccl).expect("file").path, mine);
        let dir = search(
            t.path(),
            &[(
                "TESSERA_NCCL_LIB",
                t.path().join("custom").display().to_string(),
            )],
        );
        assert_eq!(dir.find(CudaLib::Nccl).expect("dir").path, mine);
        let libdir = search(
            t.path(),
            &[(ENV_LIB_DIR, t.path().join("custom").display().to_string())],
        );
        assert_eq!(libdir.find(CudaLib::Nccl).expect("lib dir").path, mine);
        // An override that holds nothing is an error, not a fallback.
        let empty = search(
            t.path(),
            &[(
                "TESSERA_NCCL_LIB",
                t.path().join("nothing").display().to_string(),
            )],
        );
        let e = empty.find(CudaLib::Nccl).expect_err("missing").to_string();
        assert!(
            e.contains("TESSERA_NCCL_LIB is set") && e.contains("nothing"),
            "{e}"
        );
    }

    #[test]
    fn error_lists_every_place_searched() {
        let t = tempfile::tempdir().expect("tempdir");
        touch(t.path(), "usr/lib/python3.10/site-packages/placeholder");
        let s = search(t.path(), &[("LD_LIBRARY_PATH", "/opt/x".into())]);
        let e = s
            .find(CudaLib::Nccl)
            .expect_err("nothing installed")
            .to_string();
        for want in [
            "CUDA library 'nccl' not found",
            "libnccl.so.2, libnccl.so",
            "/opt/x",
            "python3.10/site-packages/nvidia/nccl/lib",
            "usr/local/cuda/lib64",
            "usr/lib/x86_64-linux-gnu",
            "TESSERA_NCCL_LIB",
            ENV_LIB_DIR,
        ] {
            assert!(e.contains(want), "missing '{want}' in: {e}");
        }
    }

    #[test]
    fn file_names_put_the_shipped_soname_first() {
        assert_eq!(CudaLib::Nccl.file_names(), ["libnccl.so.2", "libnccl.so"]);
        assert_eq!(CudaLib::Nvrtc.file_names()[0], "libnvrtc.so.13");
        assert_eq!(CudaLib::CublasLt.file_names()[1], "libcublasLt.so.12");
    }
}
