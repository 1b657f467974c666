//! Stand-in for the CUDA backend when the crate is built without the `cuda` feature.
//!
//! [`CudaBackend::new`] always fails with [`NOT_COMPILED`], so `--backend cuda` gives a clear
//! one-line error instead of a missing symbol. With `--features cuda`, `device::cuda`
//! re-exports the real backend of `crate::cuda`, which provides the same `CudaBackend::new()`
//! and implements [`Backend`].
use super::{Backend, Device, DeviceError, DeviceKind, OutSpec};
use crate::collectives::CollectiveSpec;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Op, Tensor};

/// The error every use of this stub reports.
pub const NOT_COMPILED: &str = "CUDA backend not compiled in: rebuild with --features cuda";

/// The (absent) CUDA backend. It cannot be constructed.
#[derive(Debug)]
pub struct CudaBackend {
    never: NoDevice,
}

impl CudaBackend {
    /// Always fails: the crate was built without the `cuda` feature.
    pub fn new() -> Result<CudaBackend, DeviceError> {
        Err(DeviceError::Backend(NOT_COMPILED.into()))
    }
}

/// A device type with no values (the stub never creates devices).
#[derive(Debug)]
pub enum NoDevice {}

impl Backend for CudaBackend {
    type Device = NoDevice;

    fn kind(&self) -> DeviceKind {
        match self.never {}
    }

    fn create_devices(&self, _n: usize) -> Result<Vec<NoDevice>, DeviceError> {
        match self.never {}
    }
}

impl Device for NoDevice {
    type Buffer = Tensor;

    fn upload(&mut self, _t: Tensor) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn download(&mut self, _b: &Tensor) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn bytes(&self, _b: &Tensor) -> usize {
        match *self {}
    }

    fn shape<'b>(&self, _b: &'b Tensor) -> &'b [usize] {
        match *self {}
    }

    fn compute(
        &mut self,
        _op: &Op,
        _inputs: &[&Tensor],
        _outs: &[OutSpec<'_>],
    ) -> Result<Vec<Tensor>, DeviceError> {
        match *self {}
    }

    fn sharded_gather(
        &mut self,
        _table: &Tensor,
        _indices: &Tensor,
        _offset: usize,
        _rows: usize,
        _vocab: usize,
    ) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn local_slice(&mut self, _x: &Tensor, _slice: &AxisSlice) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn scale_to_partial(&mut self, _x: &Tensor, _n: usize) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn collective(
        &mut self,
        _group: &[usize],
        _spec: &CollectiveSpec,
        _x: &Tensor,
    ) -> Result<Tensor, DeviceError> {
        match *self {}
    }

    fn abort_peers(&self) {
        match *self {}
    }
}
