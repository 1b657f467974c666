//! Detecting a usable CUDA installation without panicking.
//!
//! cudarc opens the CUDA libraries lazily (`dynamic-loading`) and panics when one is
//! missing or lacks a symbol. Everything here checks first that the shared library can be
//! opened, and runs the first driver calls under `catch_unwind`, so that a machine without
//! CUDA gets a [`CudaError::NoDriver`] / [`CudaError::MissingLibrary`] instead of a panic.
use super::libs::{prepare_for_cudarc, CudaLib};
use super::CudaError;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic (cudarc's reaction to a missing library or symbol) into an
/// error built by `wrap` from the panic message.
pub(crate) fn guarded<T>(
    f: impl FnOnce() -> T,
    wrap: impl FnOnce(String) -> CudaError,
) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic while loading CUDA".to_string());
        wrap(msg)
    })
}

/// Checks that the CUDA driver library can be opened and initialised and returns the
/// number of devices (at least 1).
pub fn driver_device_count() -> Result<usize, CudaError> {
    // SAFETY: is_culib_present only tries to dlopen the driver library by its usual names
    // and drops the handle; it has no other side effect.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver(
            "libcuda could not be opened; is the NVIDIA driver installed and on LD_LIBRARY_PATH?"
                .into(),
        ));
    }
    let count = guarded(
        cudarc::driver::CudaContext::device_count,
        CudaError::NoDriver,
    )?
    .map_err(|e| CudaError::NoDriver(e.to_string()))?;
    if count <= 0 {
        return Err(CudaError::NoDriver(
            "the driver reports no CUDA device".into(),
        ));
    }
    Ok(count as usize)
}

/// Makes NVRTC and cuBLAS loadable (needed by every executor): found where they are
/// installed and preloaded when cudarc's own lookup would miss them (see [`super::libs`]).
pub fn compute_libraries() -> Result<(), CudaError> {
    // SAFETY: is_culib_present only tries to dlopen the library by cudarc's names and drops
    // the handle; it has no other side effect.
    prepare_for_cudarc(CudaLib::Nvrtc, || unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    })?;
    // SAFETY: as above.
    prepare_for_cudarc(CudaLib::Cublas, || unsafe {
        cudarc::cublas::sys::is_culib_present()
    })
}

/// Checks that NCCL can be found and opened (needed by multi-process runs). NCCL is called
/// through [`super::nccl`], which resolves it from the library found here.
pub fn nccl_library() -> Result<(), CudaError> {
    super::nccl::NcclApi::get().map(|_| ())
}

/// Why CUDA tests and tools cannot run here, or `None` when a driver, a device, NVRTC and
/// cuBLAS are all present. Tests print `skipping: no CUDA driver found (<reason>)`.
pub fn unavailable_reason() -> Option<String> {
    match driver_device_count().and_then(|_| compute_libraries()) {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where cudarc's own names do not find NVRTC and the search finds nothing either, the
    /// error lists what was looked for instead of cudarc's panic.
    #[test]
    fn missing_compute_libraries_are_an_error_listing_the_search() {
        // SAFETY: only tries to dlopen NVRTC by cudarc's names.
        let cudarc_finds = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        let search = crate::cuda::libs::LibSearch::from_process();
        if cudarc_finds || search.find(CudaLib::Nvrtc).is_ok() {
            return; // NVRTC is installed here
        }
        let e = compute_libraries().expect_err("no NVRTC").to_string();
        assert!(
            e.contains("CUDA library 'nvrtc'")
                && e.contains("libnvrtc.so.12")
                && e.contains("TESSERA_NVRTC_LIB"),
            "{e}"
        );
    }
}
