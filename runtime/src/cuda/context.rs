//! A GPU (driver context + loaded kernels) and per-rank lanes (stream + cuBLAS handle).
//!
//! Kernels are compiled by NVRTC for the device's architecture (CUBIN for `sm_XY`, see
//! [`super::compile`]) once per process and target; modules are loaded once per [`Gpu`]. Several lanes may share one `Gpu`: the virtual
//! ranks of [`super::virtual_ranks`] are lanes of the same device.
use super::compile::{choose_target, image, toolchain, Target};
use super::probe::{compute_libraries, driver_device_count, guarded};
use super::source::MODULES;
use super::CudaError;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::Arc;

/// One CUDA device: its context and every Tessera kernel, loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
    target: Target,
}

impl Gpu {
    /// Opens device `ordinal`, compiles (NVRTC, cached per process) and loads the kernels.
    pub fn open(ordinal: usize) -> Result<Arc<Gpu>, CudaError> {
        let count = driver_device_count()?;
        compute_libraries()?;
        if ordinal >= count {
            return Err(CudaError::Driver(format!(
                "device {ordinal} requested but only {count} CUDA device(s) visible"
            )));
        }
        let ctx = guarded(|| CudaContext::new(ordinal), CudaError::NoDriver)?
            .map_err(CudaError::driver)?;
        let cc = ctx.compute_capability().map_err(CudaError::driver)?;
        let tc = toolchain()?;
        let target = choose_target(cc, &tc).map_err(CudaError::Driver)?;
        let mut functions = HashMap::new();
        for m in MODULES {
            let img = image(m.file, &m.full_source(), target)?;
            let module = ctx
                .load_module(Ptx::from_binary(img.to_vec()))
                .map_err(|e| {
                    CudaError::Driver(format!(
                        "loading {} ({}, NVRTC {}.{}, driver {}): {e}",
                        m.file,
                        target.arch_flag(),
                        tc.nvrtc.0,
                        tc.nvrtc.1,
                        tc.driver
                    ))
                })?;
            for f in m.functions {
                let func = module
                    .load_function(f)
                    .map_err(|e| CudaError::Driver(format!("kernel {f} of {}: {e}", m.file)))?;
                functions.insert(*f, func);
            }
        }
        Ok(Arc::new(Gpu {
            ctx,
            functions,
            target,
        }))
    }

    /// What the kernels were compiled to (`sm_90` machine code, or PTX).
    pub fn target(&self) -> Target {
        self.target
    }

    /// The driver context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// A loaded kernel by name.
    pub fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaError::Unsupported(format!("kernel '{name}' is not loaded")))
    }

    /// A new lane (stream + cuBLAS handle) on this device.
    pub fn lane(self: &Arc<Self>) -> Result<Lane, CudaError> {
        let stream = self.ctx.new_stream().map_err(CudaError::driver)?;
        let blas = guarded(
            || CudaBlas::new(stream.clone()),
            |m| CudaError::MissingLibrary {
                lib: "cublas".into(),
                msg: m,
            },
        )?
        .map_err(CudaError::blas)?;
        Ok(Lane {
            gpu: self.clone(),
            stream,
            blas: ManuallyDrop::new(blas),
        })
    }
}

/// What one rank computes with: a stream of a [`Gpu`] and a cuBLAS handle bound to it.
pub struct Lane {
    /// The device.
    pub gpu: Arc<Gpu>,
    /// The stream every kernel of this rank runs on.
    pub stream: Arc<CudaStream>,
    /// cuBLAS handle on `stream` (dropped in [`Lane`]'s drop under `catch_unwind`:
    /// cudarc's `CudaBlas` unwraps the result of `cublasDestroy`).
    pub blas: ManuallyDrop<CudaBlas>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: `blas` is taken exactly once, here, and never used afterwards.
        let blas = unsafe { ManuallyDrop::take(&mut self.blas) };
        if let Err(e) = guarded(move || drop(blas), CudaError::Blas) {
            eprintln!("tessera: destroying a cuBLAS handle failed: {e}");
        }
    }
}

impl Lane {
    /// A loaded kernel by name.
    pub fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.gpu.function(name)
    }

    /// Waits for everything queued on this lane.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(CudaError::driver)
    }
}
