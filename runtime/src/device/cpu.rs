//! CPU devices: one host thread per rank, buffers are host [`Tensor`]s, ops run through
//! [`tessera_kernels::eval`] (the same code as the reference executor) and collectives go
//! through a shared-memory exchange ([`ShmWorld`]).
use super::shm::ShmWorld;
use super::{Backend, Device, DeviceError, DeviceKind, OutSpec};
use crate::collectives::{slice_axis, CollectiveSpec};
use std::sync::Arc;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Op, Tensor, TensorData};

/// The CPU backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Device = CpuDevice;

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn create_devices(&self, n: usize) -> Result<Vec<CpuDevice>, DeviceError> {
        if n == 0 {
            return Err(DeviceError::Backend(
                "a run needs at least one device".into(),
            ));
        }
        let world = ShmWorld::new(n);
        Ok((0..n)
            .map(|rank| CpuDevice {
                rank,
                world: world.clone(),
            })
            .collect())
    }
}

/// One CPU rank.
#[derive(Debug)]
pub struct CpuDevice {
    rank: usize,
    world: Arc<ShmWorld>,
}

impl CpuDevice {
    /// This device's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }
}

/// A CPU buffer: a host tensor, shared (not copied) when it is a resident weight.
pub type CpuBuffer = Arc<Tensor>;

impl Device for CpuDevice {
    type Buffer = CpuBuffer;

    fn upload(&mut self, t: Tensor) -> Result<CpuBuffer, DeviceError> {
        Ok(Arc::new(t))
    }

    fn upload_shared(&mut self, t: &Arc<Tensor>) -> Result<CpuBuffer, DeviceError> {
        Ok(t.clone())
    }

    fn download(&mut self, b: &CpuBuffer) -> Result<Tensor, DeviceError> {
        Ok(Tensor::clone(b))
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
        Ok(tessera_kernels::eval(op, &ins)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn fuses(&self) -> bool {
        true
    }

    fn compute_fused(
        &mut self,
        op: &tessera_kernels::FusedOp,
        inputs: &[&CpuBuffer],
    ) -> Result<CpuBuffer, DeviceError> {
        let ins: Vec<&Tensor> = inputs.iter().map(|b| b.as_ref()).collect();
        Ok(Arc::new(tessera_kernels::eval_fused(op, &ins)?))
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
