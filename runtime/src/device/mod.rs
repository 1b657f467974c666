//! Devices and backends that execute the per-rank programs of a plan.
//!
//! The plan executor ([`crate::exec`]) is backend-agnostic: it validates the plan, binds
//! inputs, loads weights (each rank only its slice), walks each rank's steps in order on one
//! thread per rank, frees buffers after their last use and measures live bytes. What a step
//! *does* is delegated to a [`Device`], created per rank by a [`Backend`]:
//!
//! * [`cpu::CpuBackend`]: host memory, ops through [`tessera_kernels::eval`], collectives over
//!   shared memory ([`shm`]).
//! * [`cuda::CudaBackend`] (feature `cuda`): every rank a stream ("lane") of GPU 0, collectives
//!   in device memory; multi-GPU runs give each process one `crate::cuda::CudaDevice` with an
//!   NCCL communicator (`crate::cuda::RankSession`) and run its rank with
//!   [`crate::exec::run_one_rank`]. Without the feature, `device::cuda` is a stub whose
//!   `CudaBackend::new` returns "CUDA backend not compiled in: rebuild with --features cuda".
//!
//! To add a backend, implement [`Backend`] + [`Device`]; nothing else in the executor changes.
//! Contract for implementors:
//! * Every method is called from the rank's own thread, in program order.
//! * [`Device::collective`] blocks until every member of `group` has called it with the same
//!   [`CollectiveSpec`] and returns this rank's output; reductions must be deterministic.
//! * When any rank fails, the executor calls [`Device::abort_peers`] on the failing rank's
//!   device; peers blocked in (or later entering) a collective must then return an error
//!   promptly instead of hanging.
use crate::collectives::{CollectiveError, CollectiveSpec};
use std::fmt;
use std::sync::Arc;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{DType, Op, Tensor};
use tessera_kernels::{FusedOp, KernelError};
use thiserror::Error;

pub mod cpu;
mod cpu_pool;
pub mod shm;

#[cfg(not(feature = "cuda"))]
pub mod cuda;

/// The CUDA backend (feature `cuda`): [`crate::cuda::CudaBackend`] and its devices.
#[cfg(feature = "cuda")]
pub mod cuda {
    pub use crate::cuda::{CudaBackend, CudaDevice};
}

/// The dtype and shape the plan gives one output of a compute step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutSpec<'a> {
    /// Logical dtype.
    pub dtype: DType,
    /// Shape.
    pub shape: &'a [usize],
}

/// Which kind of device runs a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// Host threads, one per rank.
    #[default]
    Cpu,
    /// One CUDA GPU per rank (feature `cuda`).
    Cuda,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda),
            other => Err(format!("unknown backend '{other}' (expected cpu or cuda)")),
        }
    }
}

/// A device operation failed.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// An op's kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A collective failed or was aborted.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// Anything else the backend reports (allocation, driver, transfer).
    #[error("{0}")]
    Backend(String),
}

impl DeviceError {
    /// True when this error only reports that another rank failed first.
    pub fn is_abort(&self) -> bool {
        matches!(
            self,
            DeviceError::Collective(CollectiveError::Aborted { .. })
        )
    }
}

/// Creates the devices of a run.
pub trait Backend: Sync {
    /// The device type of this backend.
    type Device: Device;

    /// Which kind this is.
    fn kind(&self) -> DeviceKind;

    /// Creates `n` devices, one per rank (index = rank), connected for collectives.
    fn create_devices(&self, n: usize) -> Result<Vec<Self::Device>, DeviceError>;

    /// Host cores each of `n` devices keeps busy while it computes (a CPU device's
    /// threads, whose helpers poll during a run). Default: 1 (the rank's own thread).
    fn busy_cores_per_device(&self, _n: usize) -> usize {
        1
    }
}

/// One rank's device: owns its buffers and executes the steps of a rank program on them.
pub trait Device: Send {
    /// A tensor resident on this device.
    type Buffer: Send;

    /// Binds the calling thread (the rank's own thread, called once when it starts) to
    /// the device's cores, where the backend pins its threads. Default: nothing.
    fn bind_thread(&self) {}

    /// Runs `f` (a whole run of the rank's program) in the device's own compute context: a
    /// CPU device with several threads runs it on a thread of its pool, so that the work it
    /// splits starts there without a hand-over to a sleeping pool at every op. Default: on
    /// the calling thread.
    fn enter<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R
    where
        Self: Sized,
    {
        f(self)
    }

    /// Called when a run of the rank's program ends (finished or failed), inside
    /// [`Device::enter`]. Default: nothing.
    fn finish_run(&mut self) {}

    /// Copies a host tensor to the device.
    fn upload(&mut self, t: Tensor) -> Result<Self::Buffer, DeviceError>;

    /// Makes a weight resident in the store ([`crate::weights::WeightStore::load_resident`])
    /// available as a buffer. The default copies it through [`Device::upload`]; devices whose
    /// buffers live in host memory share it instead.
    fn upload_shared(&mut self, t: &Arc<Tensor>) -> Result<Self::Buffer, DeviceError> {
        self.upload(Tensor::clone(t))
    }

    /// Copies a buffer back to the host.
    fn download(&mut self, b: &Self::Buffer) -> Result<Tensor, DeviceError>;

    /// [`Device::download`] of a buffer the caller gives up (a run's last use of an output):
    /// the default copies it; a device whose buffers are host tensors hands the tensor over
    /// without a copy when nothing else shares it.
    fn download_owned(&mut self, b: Self::Buffer) -> Result<Tensor, DeviceError> {
        self.download(&b)
    }

    /// The buffer's value as a shared host tensor: a copy ([`Device::download`]), or the
    /// buffer itself on a device whose buffers are host tensors (a cached weight or constant
    /// then shares the tensor instead of holding a second copy).
    fn download_shared(&mut self, b: &Self::Buffer) -> Result<Arc<Tensor>, DeviceError> {
        self.download(b).map(Arc::new)
    }

    /// Bytes the buffer occupies on the device (for the live-memory statistics).
    fn bytes(&self, b: &Self::Buffer) -> usize;

    /// Shape of a buffer.
    fn shape<'b>(&self, b: &'b Self::Buffer) -> &'b [usize];

    /// Runs an op (semantics of [`tessera_kernels::eval`]). `outs` are the outputs the plan
    /// binds (devices that allocate outputs up front size them from it); the executor checks
    /// the shapes of the results either way, and extra trailing results are dropped.
    fn compute(
        &mut self,
        op: &Op,
        inputs: &[&Self::Buffer],
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<Self::Buffer>, DeviceError>;

    /// True when this device's buffers are host tensors that [`Device::upload_shared`]
    /// shares without copying; a session then computes activation-independent steps once
    /// and serves host copies of their outputs ([`crate::exec`]'s constant cache). Default:
    /// false.
    fn shares_host_tensors(&self) -> bool {
        false
    }

    /// True when this device runs fused op chains ([`Device::compute_fused`]); the executor
    /// then fuses the patterns of [`crate::exec`]'s fusion pass. Default: false.
    fn fuses(&self) -> bool {
        false
    }

    /// Runs a fused op chain (semantics of [`tessera_kernels::eval_fused_outputs`]): its
    /// outputs, in order. Only called when [`Device::fuses`] is true; the default reports
    /// that the backend has no fused kernels.
    fn compute_fused(
        &mut self,
        op: &FusedOp,
        _inputs: &[&Self::Buffer],
    ) -> Result<Vec<Self::Buffer>, DeviceError> {
        Err(DeviceError::Backend(format!(
            "{}: this backend has no fused kernels",
            op.name()
        )))
    }

    /// Vocab-parallel gather along axis 0: this rank holds rows `[offset, offset + rows)` of a
    /// table of `vocab` rows; indices (negative ones count from `vocab`) outside that range give
    /// zero rows. Output shape: `indices.shape ++ table.shape[1..]`.
    fn sharded_gather(
        &mut self,
        table: &Self::Buffer,
        indices: &Self::Buffer,
        offset: usize,
        rows: usize,
        vocab: usize,
    ) -> Result<Self::Buffer, DeviceError>;

    /// Copies range `slice` of one axis (Replicated → Split, no communication).
    fn local_slice(
        &mut self,
        x: &Self::Buffer,
        slice: &AxisSlice,
    ) -> Result<Self::Buffer, DeviceError>;

    /// Divides a float buffer by `n` (Replicated → one addend of a Partial sum).
    fn scale_to_partial(&mut self, x: &Self::Buffer, n: usize)
        -> Result<Self::Buffer, DeviceError>;

    /// Runs one collective over `group` (global ranks in member order; this rank is one of
    /// them) and returns this rank's output.
    fn collective(
        &mut self,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &Self::Buffer,
    ) -> Result<Self::Buffer, DeviceError>;

    /// Runs a collective whose input is the same tensor on every run of the session (a
    /// weight shard the plan gathers on every run); `key` names the collective the same on
    /// every member of `group`. A backend whose members share memory may read its peers'
    /// inputs without meeting them once every member has called it as constant; the
    /// default runs it as [`Device::collective`].
    fn collective_of_constant(
        &mut self,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &Self::Buffer,
        _key: usize,
    ) -> Result<Self::Buffer, DeviceError> {
        self.collective(group, spec, x)
    }

    /// Called when this rank failed: wakes peers blocked in collectives so they fail too.
    fn abort_peers(&self);
}
