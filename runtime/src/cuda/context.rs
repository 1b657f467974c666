//! A GPU (driver context + loaded kernels) and per-rank lanes (stream + cuBLAS handle).
//!
//! PTX is compiled with NVRTC once per process and architecture (a process-wide cache);
//! modules are loaded once per [`Gpu`]. Several lanes may share one `Gpu`: the virtual
//! ranks of [`super::virtual_ranks`] are lanes of the same device.
use super::probe::{compute_libraries, driver_device_count, guarded};
use super::source::{nvrtc_options, MODULES};
use super::CudaError;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Compiled PTX by (kernel file, compute capability major, minor).
type PtxCache = Mutex<HashMap<(&'static str, i32, i32), Ptx>>;

/// Process-wide PTX cache.
fn ptx_cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles (or fetches from the cache) one kernel module for `cc`.
fn compile_cached(file: &'static str, source: String, cc: (i32, i32)) -> Result<Ptx, CudaError> {
    let key = (file, cc.0, cc.1);
    if let Some(p) = ptx_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(p);
    }
    let opts = CompileOptions {
        options: nvrtc_options(cc.0, cc.1),
        name: Some(file.to_string()),
        ..Default::default()
    };
    let compiled = guarded(
        || cudarc::nvrtc::compile_ptx_with_opts(source, opts),
        |m| CudaError::MissingLibrary {
            lib: "nvrtc".into(),
            msg: m,
        },
    )?;
    let ptx = compiled.map_err(|e| {
        let msg = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        CudaError::Compile {
            source_name: file.to_string(),
            msg,
        }
    })?;
    if let Ok(mut c) = ptx_cache().lock() {
        c.insert(key, ptx.clone());
    }
    Ok(ptx)
}

/// One CUDA device: its context and every Tessera kernel, loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
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
        let mut functions = HashMap::new();
        for m in MODULES {
            let ptx = compile_cached(m.file, m.full_source(), cc)?;
            let module = ctx
                .load_module(ptx)
                .map_err(|e| CudaError::Driver(format!("loading {}: {e}", m.file)))?;
            for f in m.functions {
                let func = module
                    .load_function(f)
                    .map_err(|e| CudaError::Driver(format!("kernel {f} of {}: {e}", m.file)))?;
                functions.insert(*f, func);
            }
        }
        Ok(Arc::new(Gpu { ctx, functions }))
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
            blas,
        })
    }
}

/// What one rank computes with: a stream of a [`Gpu`] and a cuBLAS handle bound to it.
pub struct Lane {
    /// The device.
    pub gpu: Arc<Gpu>,
    /// The stream every kernel of this rank runs on.
    pub stream: Arc<CudaStream>,
    /// cuBLAS handle on `stream`.
    pub blas: CudaBlas,
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
