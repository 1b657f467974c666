//! CPU devices: one host thread per rank, buffers are host [`Tensor`]s, ops run through
//! [`tessera_kernels::eval`] (the same code as the reference executor) and collectives go
//! through a shared-memory exchange ([`ShmWorld`]).
//!
//! A device may own several cores ([`CpuBackend::new`]'s `threads_per_device`, default the
//! machine's cores divided by the devices, at least 1): it then keeps a rayon pool of that
//! many threads and runs its large ops (products, fused kernels, long elementwise programs)
//! inside it, where the kernels split their work (the `gemm` crate over output blocks, the
//! fused kernels over rows or heads). Splitting never changes a result: no reduction is
//! divided between threads. Where the machine has a core for every thread, the rank's
//! program runs on a thread of its pool and the other threads poll for work during a run
//! (`cpu_pool`), so that small ops are worth splitting too.
//!
//! With [`CpuBackend::pinned`], each device's threads are bound to cores of their own (device
//! `r` with `k` threads: the `r·k`-th to `(r+1)·k − 1`-th core the process may run on) when
//! the machine has a core for every thread; otherwise nothing is pinned. Unpinned, the
//! scheduler may put two ranks on one core for a while, and a run that waits on a
//! collective then takes twice as long (bimodal run times on a 2-core VM).
use super::cpu_pool::{fused_is_big, op_is_big, DevicePool};
use super::shm::ShmWorld;
use super::{Backend, Device, DeviceError, DeviceKind, OutSpec};
use crate::collectives::{slice_axis, CollectiveSpec};
use std::sync::Arc;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Op, Tensor, TensorData};

/// The CPU backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend {
    /// Threads each device owns; 0: the machine's cores divided by the devices (at least 1).
    threads_per_device: usize,
    /// Bind each device's threads to cores of its own when there are enough.
    pin: bool,
}

impl CpuBackend {
    /// A backend whose devices own `threads_per_device` threads each (0: the machine's
    /// cores divided by the devices, at least 1). Threads are not pinned.
    pub fn new(threads_per_device: usize) -> CpuBackend {
        CpuBackend {
            threads_per_device,
            pin: false,
        }
    }

    /// The same backend, binding each device's threads to cores of their own (see the
    /// module documentation) when `pin` is true.
    pub fn pinned(self, pin: bool) -> CpuBackend {
        CpuBackend { pin, ..self }
    }

    /// The cores of each of `devices` devices with `threads` threads each, when pinning is
    /// on and the process may run on a core for every thread.
    fn core_sets(&self, devices: usize, threads: usize) -> Option<Vec<Vec<core_affinity::CoreId>>> {
        if !self.pin {
            return None;
        }
        let cores = core_affinity::get_core_ids()?;
        if cores.len() < devices.checked_mul(threads)? {
            return None;
        }
        Some(
            cores
                .chunks(threads)
                .take(devices)
                .map(<[_]>::to_vec)
                .collect(),
        )
    }

    /// The threads each of `devices` devices owns.
    pub fn threads_for(&self, devices: usize) -> usize {
        match self.threads_per_device {
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / devices.max(1)).max(1)
            }
            k => k,
        }
    }
}

impl Backend for CpuBackend {
    type Device = CpuDevice;

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn busy_cores_per_device(&self, n: usize) -> usize {
        self.threads_for(n)
    }

    fn create_devices(&self, n: usize) -> Result<Vec<CpuDevice>, DeviceError> {
        if n == 0 {
            return Err(DeviceError::Backend(
                "a run needs at least one device".into(),
            ));
        }
        let threads = self.threads_for(n);
        let core_sets = self.core_sets(n, threads);
        // Polling helpers would take cores from other ranks' threads where there are fewer
        // cores than threads.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let poll = cores >= n.saturating_mul(threads);
        let world = match core_sets {
            Some(_) => ShmWorld::pinned(n),
            None => ShmWorld::new(n),
        };
        (0..n)
            .map(|rank| {
                let cores = core_sets.as_ref().map(|c| c[rank].clone());
                let pool = match threads {
                    1 => None,
                    k => Some(DevicePool::new(
                        rayon::ThreadPoolBuilder::new()
                            .num_threads(k)
                            .thread_name(move |i| format!("tessera-cpu{rank}-{i}"))
                            .start_handler({
                                let cores = cores.clone();
                                move |i| {
                                    if let Some(c) = cores.as_ref().and_then(|c| c.get(i)) {
                                        core_affinity::set_for_current(*c);
                                    }
                                }
                            })
                            .build()
                            .map_err(|e| {
                                DeviceError::Backend(format!(
                                    "cannot start {k} threads for CPU device {rank}: {e}"
                                ))
                            })?,
                        poll,
                    )),
                };
                Ok(CpuDevice {
                    rank,
                    world: world.clone(),
                    pool,
                    home: cores.and_then(|c| c.first().copied()),
                })
            })
            .collect()
    }
}

/// One CPU rank.
#[derive(Debug)]
pub struct CpuDevice {
    rank: usize,
    world: Arc<ShmWorld>,
    /// The device's threads when it owns more than one.
    pool: Option<DevicePool>,
    /// The core the rank's own thread is bound to, when the backend pins.
    home: Option<core_affinity::CoreId>,
}

impl CpuDevice {
    /// This device's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The threads this device computes with.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, DevicePool::threads)
    }

    /// Runs `f` split between the device's threads when it has several and `big` says the
    /// work is worth it (see [`DevicePool::run`]), else on the calling thread alone.
    fn run<R: Send>(&mut self, big: bool, f: impl FnOnce() -> R + Send) -> R {
        match &mut self.pool {
            Some(pool) => pool.run(big, f),
            None => f(),
        }
    }
}

/// A CPU buffer: a host tensor, shared (not copied) when it is a resident weight.
pub type CpuBuffer = Arc<Tensor>;

impl Device for CpuDevice {
    type Buffer = CpuBuffer;

    fn enter<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        match self.pool.as_ref().and_then(DevicePool::home) {
            Some(pool) => pool.install(|| tessera_kernels::polled(|| f(self))),
            None => f(self),
        }
    }

    fn finish_run(&mut self) {
        if let Some(pool) = &mut self.pool {
            pool.finish_run();
        }
    }

    fn bind_thread(&self) {
        if let Some(core) = self.home {
            // A refusal (e.g. a cpuset that changed since the cores were listed) leaves the
            // thread where the scheduler puts it: slower, never wrong.
            core_affinity::set_for_current(core);
        }
    }

    fn upload(&mut self, t: Tensor) -> Result<CpuBuffer, DeviceError> {
        Ok(Arc::new(t))
    }

    fn upload_shared(&mut self, t: &Arc<Tensor>) -> Result<CpuBuffer, DeviceError> {
        Ok(t.clone())
    }

    fn download(&mut self, b: &CpuBuffer) -> Result<Tensor, DeviceError> {
        Ok(Tensor::clone(b))
    }

    fn download_owned(&mut self, b: CpuBuffer) -> Result<Tensor, DeviceError> {
        // The tensor itself when this was its last holder (an output logits tensor of
        // megabytes is not copied once more at the end of each run), else a copy.
        Ok(Arc::try_unwrap(b).unwrap_or_else(|shared| Tensor::clone(&shared)))
    }

    fn download_shared(&mut self, b: &CpuBuffer) -> Result<Arc<Tensor>, DeviceError> {
        Ok(b.clone())
    }

    /// Logical bytes (numel × dtype size), the measure the plan's estimates and the
    /// reference executor use.
    fn bytes(&self, b: &CpuBuffer) -> usize {
        b.size_bytes()
    }

    fn shape<'b>(&self, b: &'b CpuBuffer) -> &'b [usize] {
        &b.shape
    }

    fn compute(
        &mut self,
        op: &Op,
        inputs: &[&CpuBuffer],
        _outs: &[OutSpec<'_>],
    ) -> Result<Vec<CpuBuffer>, DeviceError> {
        let ins: Vec<&Tensor> = inputs.iter().map(|b| b.as_ref()).collect();
        let big = self
            .pool
            .as_ref()
            .is_some_and(|p| op_is_big(op, &ins, p.min()));
        Ok(self
            .run(big, || tessera_kernels::eval(op, &ins))?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn fuses(&self) -> bool {
        true
    }

    fn shares_host_tensors(&self) -> bool {
        true
    }

    fn compute_fused(
        &mut self,
        op: &tessera_kernels::FusedOp,
        inputs: &[&CpuBuffer],
    ) -> Result<Vec<CpuBuffer>, DeviceError> {
        let ins: Vec<&Tensor> = inputs.iter().map(|b| b.as_ref()).collect();
        let big = self
            .pool
            .as_ref()
            .is_some_and(|p| fused_is_big(op, &ins, p.min()));
        Ok(self
            .run(big, || tessera_kernels::eval_fused_outputs(op, &ins))?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn sharded_gather(
        &mut self,
        table: &CpuBuffer,
        indices: &CpuBuffer,
        offset: usize,
        rows: usize,
        vocab: usize,
    ) -> Result<CpuBuffer, DeviceError> {
        sharded_gather(table, indices, offset, rows, vocab)
            .map(Arc::new)
            .map_err(DeviceError::Backend)
    }

    fn local_slice(&mut self, x: &CpuBuffer, slice: &AxisSlice) -> Result<CpuBuffer, DeviceError> {
        slice_axis(x, slice.axis, slice.start, slice.end)
            .map(Arc::new)
            .map_err(|m| DeviceError::Backend(format!("local slice: {m}")))
    }

    fn scale_to_partial(&mut self, x: &CpuBuffer, n: usize) -> Result<CpuBuffer, DeviceError> {
        match &x.data {
            TensorData::F32(v) => {
                let d = n as f32;
                Ok(Arc::new(Tensor {
                    dtype: x.dtype,
                    shape: x.shape.clone(),
                    data: TensorData::F32(v.iter().map(|e| e / d).collect()),
                }))
            }
            _ => Err(DeviceError::Backend(format!(
                "scale to partial: {} tensors cannot be divided",
                x.dtype
            ))),
        }
    }

    fn collective(
        &mut self,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &CpuBuffer,
    ) -> Result<CpuBuffer, DeviceError> {
        Ok(Arc::new(self.world.collective(
            self.rank,
            group,
            spec,
            Arc::clone(x),
        )?))
    }

    fn collective_of_constant(
        &mut self,
        group: &[usize],
        spec: &CollectiveSpec,
        x: &CpuBuffer,
        key: usize,
    ) -> Result<CpuBuffer, DeviceError> {
        Ok(Arc::new(self.world.collective_of_constant(
            self.rank,
            group,
            spec,
            Arc::clone(x),
            key,
        )?))
    }

    fn abort_peers(&self) {
        self.world.abort();
    }
}

/// Vocab-parallel gather on host tensors (see [`Device::sharded_gather`]).
pub fn sharded_gather(
    table: &Tensor,
    indices: &Tensor,
    offset: usize,
    rows: usize,
    vocab: usize,
) -> Result<Tensor, String> {
    let idx = indices.as_i64().ok_or_else(|| {
        format!(
            "sharded gather: indices must be integers, got {}",
            indices.dtype
        )
    })?;
    if table.shape.first() != Some(&rows) {
        return Err(format!(
            "sharded gather: table shape {:?} does not hold {rows} rows",
            table.shape
        ));
    }
    let row: usize = table.shape[1..].iter().product();
    let mut shape = indices.shape.clone();
    shape.extend_from_slice(&table.shape[1..]);
    let local = |i: i64| -> Result<Option<usize>, String> {
        let g = if i < 0 { i + vocab as i64 } else { i };
        if g < 0 || g >= vocab as i64 {
            return Err(format!(
                "sharded gather: index {i} out of range for {vocab} rows"
            ));
        }
        let g = g as usize;
        Ok((g >= offset && g < offset + rows).then(|| g - offset))
    };
    fn go<T: Copy + Default>(
        v: &[T],
        idx: &[i64],
        row: usize,
        local: &dyn Fn(i64) -> Result<Option<usize>, String>,
    ) -> Result<Vec<T>, String> {
        let mut out = Vec::with_capacity(idx.len() * row);
        for &i in idx {
            match local(i)? {
                Some(r) => out.extend_from_slice(&v[r * row..(r + 1) * row]),
                None => out.resize(out.len() + row, T::default()),
            }
        }
        Ok(out)
    }
    let data = match &table.data {
        TensorData::F32(v) => TensorData::F32(go(v, idx, row, &local)?),
        TensorData::I64(v) => TensorData::I64(go(v, idx, row, &local)?),
        TensorData::Bool(v) => TensorData::Bool(go(v, idx, row, &local)?),
    };
    Ok(Tensor {
        dtype: table.dtype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_gather_zeroes_rows_held_elsewhere() {
        // Vocab of 6 rows of width 2; this rank holds rows [2, 4).
        let table = Tensor::f32(vec![2, 2], vec![20.0, 21.0, 30.0, 31.0]);
        let idx = Tensor::i64(vec![2, 2], vec![0, 2, 3, -3]);
        let out = sharded_gather(&table, &idx, 2, 2, 6).unwrap();
        assert_eq!(out.shape, vec![2, 2, 2]);
        assert_eq!(
            out.as_f32().unwrap(),
            &[0.0, 0.0, 20.0, 21.0, 30.0, 31.0, 30.0, 31.0]
        );
        let e = sharded_gather(&table, &Tensor::i64(vec![1], vec![6]), 2, 2, 6).unwrap_err();
        assert!(e.contains("index 6 out of range"), "{e}");
    }
}
