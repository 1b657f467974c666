//! Host fallback for ops without a CUDA kernel (Einsum, GatherND, GatherElements, integer
//! variants of some float kernels): download the inputs, evaluate with the CPU kernels
//! ([`tessera_kernels::eval`], the single source of op semantics), upload the outputs.
use super::super::buffer::DeviceTensor;
use super::super::context::Lane;
use super::super::CudaError;
use tessera_ir::Op;

/// Evaluates `op` on the host.
pub fn on_host(
    lane: &Lane,
    op: &Op,
    inputs: &[&DeviceTensor],
) -> Result<Vec<DeviceTensor>, CudaError> {
    let host: Vec<_> = inputs
        .iter()
        .map(|t| t.download(lane))
        .collect::<Result<_, _>>()?;
    let refs: Vec<_> = host.iter().collect();
    let outs = tessera_kernels::eval(op, &refs)
        .map_err(|e| CudaError::Unsupported(format!("host fallback for {}: {e}", op.name())))?;
    outs.iter().map(|t| DeviceTensor::upload(lane, t)).collect()
}
