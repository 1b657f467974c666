//! The CUDA backend as a [`Device`]: the executor's rank interpreter ([`crate::exec`]) runs
//! CUDA ranks exactly as it runs CPU ranks.
//!
//! * [`CudaBackend`] creates the devices of one process: N lanes (streams) of one GPU whose
//!   collectives meet in device memory, one exchange per group of ranks ([`LaneGroups`]).
//! * [`CudaDevice::open`] creates the single device of a rank process (one process per GPU),
//!   its collectives going through NCCL ([`CommSpec`]).
use super::buffer::DeviceTensor;
use super::collectives::nccl_collective;
use super::comm::{id_from_bytes, join_nccl, CommSpec, NcclComm};
use super::context::{Gpu, Lane};
use super::ops;
use super::probe::guarded;
use super::virtual_ranks::{lane_collective, LaneGroups};
use super::CudaError;
use crate::collectives::CollectiveSpec;
use crate::device::{Backend, Device, DeviceError, DeviceKind, OutSpec};
use std::sync::Arc;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Op, Tensor};

/// Runs one device operation, turning a panic inside cudarc (a missing symbol in an older
/// library, an `unwrap` on a driver error in its safe layer) into an error naming `what`,
/// so that a rank fails with a message (and its peers are woken) instead of unwinding
/// through the executor.
fn boundary<T, E: Into<DeviceError>>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, DeviceError> {
    match guarded(f, |m| {
        CudaError::Driver(format!("{what}: panic inside cudarc: {m}"))
    }) {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(e.into()),
    }
}

/// The in-process CUDA backend: every rank a lane of one GPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaBackend {
    ordinal: usize,
}

impl CudaBackend {
    /// The backend on GPU 0 (the driver is opened when the devices are created).
    pub fn new() -> Result<CudaBackend, DeviceError> {
        Ok(CudaBackend::on_gpu(0))
    }

    /// The backend on GPU `ordinal`.
    pub fn on_gpu(ordinal: usize) -> CudaBackend {
        CudaBackend { ordinal }
    }
}

impl Backend for CudaBackend {
    type Device = CudaDevice;

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    /// Opens the GPU (NVRTC-compiling the kernels once per process) and gives each of the
    /// `n` ranks a lane of it; validated plans have at least one rank.
    fn create_devices(&self, n: usize) -> Result<Vec<CudaDevice>, DeviceError> {
        let gpu = Gpu::open(self.ordinal)?;
        let timeout = super::env::collective_timeout_from_env()?;
        let groups = Arc::new(LaneGroups::new(timeout));
        (0..n)
            .map(|rank| {
                Ok(CudaDevice {
                    rank,
                    lane: gpu.lane()?,
                    peers: Peers::Lanes(groups.clone()),
                })
            })
            .collect()
    }
}

/// How a device reaches the other ranks.
enum Peers {
    /// World size 1.
    None,
    /// Virtual ranks: lanes of the same GPU in this process (one exchange per group).
    Lanes(Arc<LaneGroups>),
    /// One process per GPU.
    Nccl(NcclComm),
}

/// One CUDA rank: a lane of a GPU and its way to the other ranks.
pub struct CudaDevice {
    rank: usize,
    lane: Lane,
    peers: Peers,
}

impl CudaDevice {
    /// Opens the device of rank `rank` of `world` in a process of its own: world size 1
    /// ([`CommSpec::Single`]) or an NCCL communicator (joining blocks until all ranks did).
    pub fn open(rank: usize, world: usize, comm: CommSpec) -> Result<CudaDevice, CudaError> {
        if rank >= world {
            return Err(CudaError::Plan(format!(
                "rank {rank} is not below world size {world}"
            )));
        }
        match comm {
            CommSpec::Single { device } => {
                if world != 1 {
                    return Err(CudaError::Plan(format!(
                        "world size {world} needs NCCL (CommSpec::Nccl) or virtual ranks"
                    )));
                }
                let lane = Gpu::open(device)?.lane()?;
                Ok(CudaDevice {
                    rank,
                    lane,
                    peers: Peers::None,
                })
            }
            CommSpec::Nccl {
                device,
                id,
                timeouts,
            } => {
                let id = id_from_bytes(&id)?;
                let lane = Gpu::open(device)?.lane()?;
                let comm = join_nccl(&lane.stream, rank, world, &id, timeouts)?;
                Ok(CudaDevice {
                    rank,
                    lane,
                    peers: Peers::Nccl(comm),
                })
            }
        }
    }

    /// This device's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The lane (stream + cuBLAS handle) this device computes on.
    pub fn lane(&self) -> &Lane {
        &self.lane
    }
}

impl Device for CudaDevice {
    type Buffer = DeviceTensor;

    fn upload(&mut self, t: Tensor) -> Result<DeviceTensor, DeviceError> {
        boundary("upload", || DeviceTensor::upload(&self.lane, &t))
    }

    fn upload_shared(&mut self, t: &Arc<Tensor>) -> Result<DeviceTensor, DeviceError> {
        boundary("upload", || DeviceTensor::upload(&self.lane, t))
    }

    fn download(&mut self, b: &DeviceTensor) -> Result<Tensor, DeviceError> {
        boundary("download", || b.download(&self.lane))
    }

    /// Logical bytes (numel × dtype size), the measure the CPU device and the plan's
    /// estimates use (device storage widens f16/bf16 to f32 and narrow integers to i64).
    fn bytes(&self, b: &DeviceTensor) -> usize {
        b.numel() * b.dtype.size_bytes()
    }

    fn shape<'b>(&self, b: &'b DeviceTensor) -> &'b [usize] {
        &b.shape
    }

    fn compute(
        &mut self,
        op: &Op,
        inputs: &[&DeviceTensor],
        outs: &[OutSpec<'_>],
    ) -> Result<Vec<DeviceTensor>, DeviceError> {
        boundary(&op.name(), || ops::run_op(&self.lane, op, inputs, outs))
    }

    fn sharded_gather(
        &mut self,
        table: &DeviceTensor,
        indices: &DeviceTensor,
        offset: usize,
        rows: usize,
        vocab: usize,
    ) -> Result<DeviceTensor, DeviceError> {
        boundary("sharded gather", || {
            ops::sharded_gather(&self.lane, table, indices, offset, rows, vocab)
        })
    }

    fn local_slice(
        &mut self,
        x: &DeviceTensor,
        slice: &AxisSlice,
    ) -> Result<DeviceTensor, DeviceError> {
        boundary("local slice", || {
            ops::movement::take_range(&self.lane, x, slice.axis, slice.start, slice.end)
        })
    }

    fn scale_to_partial(
        &mut self,
        x: &DeviceTensor,
        n: usize,
    ) -> Result<DeviceTensor, DeviceError> {
        boundary("scale to partial", || {
            ops::elementwise::scale(&self.lane, x, 1.0 / n as f32)
        })
    }

    fn collective(
        &mut self,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &DeviceTensor,
    ) -> Result<DeviceTensor, DeviceError> {
        let (rank, lane) = (self.rank, &self.lane);
        match &mut self.peers {
            Peers::None => {
                super::collectives::check_full_group(group, 1)?;
                Ok(x.clone())
            }
            Peers::Lanes(groups) => boundary(spec.kind.as_str(), || {
                lane_collective(&groups.exchange(group), rank, lane, group, spec, x)
            }),
            Peers::Nccl(comm) => boundary(spec.kind.as_str(), || {
                nccl_collective(lane, comm, group, spec, x)
            }),
        }
    }

    /// Virtual ranks wake their peers; rank processes need nothing here: a failing process
    /// exits, and the rendezvous watchdog of every other rank stops it when the connection
    /// drops (see [`super::rendezvous`]).
    fn abort_peers(&self) {
        if let Peers::Lanes(groups) = &self.peers {
            groups.abort();
        }
    }
}
