//! Compiling the kernels for the device at hand with NVRTC.
//!
//! PTX is only portable forward: an NVRTC newer than the driver writes a PTX version the
//! driver's JIT rejects (NVRTC 13.2 writes PTX 9.2; a CUDA 13.0 driver takes up to 9.0).
//! So the kernels are compiled to machine code (CUBIN, `--gpu-architecture=sm_XY`) for the
//! device's exact compute capability whenever NVRTC supports that architecture, and the
//! driver loads it without a JIT. Only for a device newer than this NVRTC knows, PTX for
//! the newest architecture NVRTC supports below it is produced (`compute_XY`), which the
//! (then necessarily newer) driver JIT-compiles. [`choose_target`] is that rule, tested on
//! the host; images are cached per process by (module, target).
use super::probe::guarded;
use super::CudaError;
use cudarc::nvrtc::{result, sys};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// What NVRTC is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for `sm_<arch>` (arch = 10·major + minor).
    Cubin(i32),
    /// PTX for `compute_<arch>`, JIT-compiled by the driver.
    Ptx(i32),
}

impl Target {
    /// The `--gpu-architecture` value.
    pub fn arch_flag(self) -> String {
        match self {
            Target::Cubin(a) => format!("sm_{a}"),
            Target::Ptx(a) => format!("compute_{a}"),
        }
    }
}

/// The compiler and driver versions that decide the [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// NVRTC (major, minor).
    pub nvrtc: (i32, i32),
    /// Architectures NVRTC can compile for (`nvrtcGetSupportedArchs`: 75, 80, 86, ...).
    pub supported: Vec<i32>,
    /// Driver version as `cuDriverGetVersion` reports it (12080 = CUDA 12.8).
    pub driver: i32,
}

/// The target for a device of compute capability `cc` (see the module notes).
pub fn choose_target(cc: (i32, i32), tc: &Toolchain) -> Result<Target, String> {
    let arch = cc.0 * 10 + cc.1;
    if tc.supported.contains(&arch) {
        return Ok(Target::Cubin(arch));
    }
    let below = tc.supported.iter().copied().filter(|a| *a <= arch).max();
    let Some(best) = below else {
        return Err(format!(
            "the device is sm_{arch}, older than every architecture NVRTC {}.{} supports ({:?})",
            tc.nvrtc.0, tc.nvrtc.1, tc.supported
        ));
    };
    let nvrtc = tc.nvrtc.0 * 1000 + tc.nvrtc.1 * 10;
    if nvrtc > tc.driver {
        return Err(format!(
            "NVRTC {}.{} does not know sm_{arch}, and its PTX is newer than the driver \
             (CUDA {}.{}) accepts: use an NVRTC that supports sm_{arch} (TESSERA_NVRTC_LIB)",
            tc.nvrtc.0,
            tc.nvrtc.1,
            tc.driver / 1000,
            (tc.driver % 1000) / 10
        ));
    }
    Ok(Target::Ptx(best))
}

/// NVRTC options for `target`: exactly that architecture, IEEE division and square root,
/// no fused multiply-add (results must match the CPU reference).
pub fn nvrtc_options(target: Target) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", target.arch_flag()),
        "--std=c++14".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
        "--fmad=false".to_string(),
    ]
}

fn nvrtc_err(what: &str, r: impl std::fmt::Debug) -> CudaError {
    CudaError::MissingLibrary {
        lib: "nvrtc".into(),
        msg: format!("{what}: {r:?}"),
    }
}

/// The installed NVRTC's version and architectures, and the driver's version.
pub fn toolchain() -> Result<Toolchain, CudaError> {
    let mut tc = Toolchain {
        nvrtc: (0, 0),
        supported: vec![],
        driver: 0,
    };
    let run = || -> Result<Toolchain, CudaError> {
        let (mut major, mut minor, mut n): (c_int, c_int, c_int) = (0, 0, 0);
        // SAFETY: the out-parameters are valid, writable ints.
        let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcVersion", r));
        }
        // SAFETY: as above.
        let r = unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetNumSupportedArchs", r));
        }
        let mut archs = vec![0 as c_int; n.max(0) as usize];
        // SAFETY: `archs` holds the `n` ints NVRTC reported.
        let r = unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetSupportedArchs", r));
        }
        let mut driver: c_int = 0;
        // SAFETY: `driver` is a valid, writable int.
        let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) };
        if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            return Err(CudaError::Driver(format!("cuDriverGetVersion: {r:?}")));
        }
        tc.nvrtc = (major, minor);
        tc.supported = archs;
        tc.driver = driver;
        Ok(tc.clone())
    };
    guarded(run, |m| nvrtc_err("loading NVRTC", m))?
}

/// Compiled images by (module file, target).
type ImageCache = Mutex<HashMap<(&'static str, Target), Arc<Vec<u8>>>>;

fn cache() -> &'static ImageCache {
    static CACHE: OnceLock<ImageCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The image (CUBIN, or NUL-terminated PTX) of module `file` for `target`, compiled once
/// per process.
pub fn image(file: &'static str, source: &str, target: Target) -> Result<Arc<Vec<u8>>, CudaError> {
    let key = (file, target);
    if let Some(i) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(i);
    }
    let img = Arc::new(guarded(
        || compile(file, source, target),
        |m| nvrtc_err("NVRTC panicked", m),
    )??);
    if let Ok(mut c) = cache().lock() {
        c.insert(key, img.clone());
    }
    Ok(img)
}

/// One NVRTC compilation. The program is always destroyed; no `unwrap` (cudarc's safe
/// `Program` unwraps in its drop and log retrieval, so its raw API is used here).
fn compile(file: &str, source: &str, target: Target) -> Result<Vec<u8>, CudaError> {
    let err = |msg: String| CudaError::Compile {
        source_name: file.to_string(),
        msg,
    };
    let src = CString::new(source).map_err(|_| err("source holds a NUL byte".into()))?;
    let name = CString::new(file).map_err(|_| err("name holds a NUL byte".into()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(format!("{e:?}")))?;
    let opts = nvrtc_options(target);
    // SAFETY: `prog` was created above and is destroyed only at the end of this function;
    // `src` and `name` outlive it.
    let out = unsafe {
        match result::compile_program(prog, &opts) {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| c_chars_to_string(&l))
                    .unwrap_or_default();
                Err(err(format!("{e:?} with {opts:?}: {log}")))
            }
            Ok(()) => match target {
                Target::Ptx(_) => result::get_ptx(prog)
                    .map(|p| p.iter().map(|c| *c as u8).collect())
                    .map_err(|e| err(format!("nvrtcGetPTX: {e:?}"))),
                Target::Cubin(_) => get_cubin(prog).map_err(err),
            },
        }
    };
    // SAFETY: `prog` is live and not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The CUBIN of a compiled program.
///
/// # Safety
/// `prog` is a live program compiled for an `sm_XY` target.
unsafe fn get_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut size: usize = 0;
    // SAFETY: `prog` is live (caller); `size` is writable.
    let r = unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return Err(format!("nvrtcGetCUBINSize: {r:?} (size {size})"));
    }
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` holds the `size` bytes NVRTC reported.
    let r = unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcGetCUBIN: {r:?}"));
    }
    Ok(buf)
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(nvrtc: (i32, i32), supported: &[i32], driver: i32) -> Toolchain {
        Toolchain {
            nvrtc,
            supported: supported.to_vec(),
            driver,
        }
    }

    const CUDA13: &[i32] = &[75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
    const CUDA124: &[i32] = &[50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];

    #[test]
    fn cubin_for_an_architecture_nvrtc_knows_even_when_nvrtc_is_newer_than_the_driver() {
        // The case: NVRTC 13.2 on a CUDA 13.0 driver, H100/H200 (sm_90): machine
        // code, so the PTX version never matters.
        let t = choose_target((9, 0), &tc((13, 2), CUDA13, 13000)).expect("target");
        assert_eq!(t, Target::Cubin(90));
        assert_eq!(nvrtc_options(t)[0], "--gpu-architecture=sm_90");
        assert_eq!(
            choose_target((8, 6), &tc((12, 4), CUDA124, 12040)),
            Ok(Target::Cubin(86))
        );
    }

    #[test]
    fn ptx_for_a_device_newer_than_nvrtc_when_the_driver_accepts_it() {
        // Blackwell (sm_100) with NVRTC 12.4: PTX for sm_90, JIT-compiled by a newer driver.
        let t = choose_target((10, 0), &tc((12, 4), CUDA124, 12080)).expect("target");
        assert_eq!(t, Target::Ptx(90));
        assert_eq!(nvrtc_options(t)[0], "--gpu-architecture=compute_90");
        // The same NVRTC on an older driver: PTX it cannot JIT, so a clear error.
        let e = choose_target((10, 0), &tc((12, 4), CUDA124, 12020)).expect_err("too new");
        assert!(e.contains("NVRTC 12.4") && e.contains("CUDA 12.2"), "{e}");
    }

    #[test]
    fn device_older_than_every_supported_architecture() {
        let e = choose_target((6, 1), &tc((13, 0), CUDA13, 13000)).expect_err("pascal");
        assert!(e.contains("sm_61") && e.contains("NVRTC 13.0"), "{e}");
    }

    #[test]
    fn options_keep_ieee_semantics() {
        let o = nvrtc_options(Target::Cubin(80));
        for want in ["--prec-div=true", "--prec-sqrt=true", "--fmad=false"] {
            assert!(o.iter().any(|s| s == want), "{o:?}");
        }
    }

    #[test]
    fn no_nvrtc_is_an_error_not_a_panic() {
        if super::super::probe::unavailable_reason().is_none() {
            return; // a real NVRTC is present; nothing to check here
        }
        // Either the library is missing (an error) or present without a driver (an error):
        // never a panic.
        let _ = toolchain();
    }
}
