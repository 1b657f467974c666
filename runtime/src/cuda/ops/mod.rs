//! Running IR ops on device tensors: one file per op family, a dispatcher here, and a host
//! fallback (download, [`tessera_kernels::eval`], upload) for the ops without a kernel.
pub mod codes;
pub(crate) mod elementwise;
mod fallback;
mod matmul;
pub(crate) mod movement;
mod norm;

use super::buffer::{ArgMut, Class, DeviceData, DeviceTensor};
use super::context::Lane;
use super::meta::StridedMeta;
use super::CudaError;
use tessera_ir::{DType, Op};

/// Launches kernel `$name` on `$lane` with the listed arguments.
macro_rules! launch {
    ($lane:expr, $name:expr, $cfg:expr $(, $arg:expr)* $(,)?) => {{
        let name: &str = $name;
        let func = $lane.function(name)?;
        #[allow(unused_imports)]
        use cudarc::driver::PushKernelArg as _;
        let mut builder = $lane.stream.launch_builder(func);
        $( builder.arg($arg); )*
        // SAFETY: every call site passes the arguments in the order and with the types of
        // the kernel's C signature in runtime/kernels/*.cu (scalars as i32/i64/f32, index
        // metadata as the #[repr(C)] mirrors of common.cuh, buffers as CudaSlices or as
        // buffer::Arg/ArgMut of a kernel picked by the buffers' storage class, so the
        // element type is the one the kernel declares), and sizes the output buffers to the
        // element counts the metadata describes (launch_new! allocates exactly `n`
        // elements), so the kernel reads and writes in bounds.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| CudaError::Driver(format!("kernel {name}: {e}")))
    }};
}
pub(crate) use launch;

/// Allocates an `$n`-element output of class `$class`, launches kernel `$name` with
/// `$cfg`, the listed arguments and then the output, and evaluates to the output storage.
macro_rules! launch_new {
    ($lane:expr, $class:expr, $n:expr, $name:expr, $cfg:expr $(, $arg:expr)* $(,)?) => {{
        let mut out = $crate::cuda::buffer::DeviceData::zeros($lane, $class, $n)?;
        launch!($lane, $name, $cfg $(, $arg)*, $crate::cuda::buffer::ArgMut(&mut out))?;
        out
    }};
}
pub(crate) use launch_new;

pub use crate::device::OutSpec;

/// Runs a strided copy from `src` into `dst` (same class).
pub(crate) fn strided_copy(
    lane: &Lane,
    meta: &StridedMeta,
    src: &DeviceData,
    dst: &mut DeviceData,
) -> Result<(), CudaError> {
    if src.class() != dst.class() {
        return Err(CudaError::Plan(
            "strided copy between different element types".into(),
        ));
    }
    let cfg = super::launch_cfg::elementwise(meta.n as usize);
    let name = src.class().copy_kernel("strided_copy");
    launch!(lane, &name, cfg, meta, src.arg(), ArgMut(dst))
}

/// A new contiguous tensor of `shape` filled by one strided copy from `src`.
pub(crate) fn copy_to_new(
    lane: &Lane,
    src: &DeviceTensor,
    meta: &StridedMeta,
    shape: Vec<usize>,
) -> Result<DeviceTensor, CudaError> {
    let mut out = DeviceData::zeros(lane, src.class(), tessera_ir::numel(&shape))?;
    strided_copy(lane, meta, &src.data, &mut out)?;
    Ok(DeviceTensor::new(src.dtype, shape, out))
}

/// Runs `op` on device inputs. `outs` are the outputs the plan expects; results are
/// checked against them.
pub fn run_op(
    lane: &Lane,
    op: &Op,
    inputs: &[&DeviceTensor],
    outs: &[OutSpec<'_>],
) -> Result<Vec<DeviceTensor>, CudaError> {
    // One arity source (the op's spec): the arms below index up to its minimum.
    op.spec()
        .arity()
        .check(inputs.len())
        .map_err(|msg| CudaError::Plan(format!("{}: {msg}", op.name())))?;
    let device: Option<Vec<DeviceTensor>> = match op {
        Op::MatMul(_) => matmul::matmul(lane, inputs[0], inputs[1])?.map(|t| vec![t]),
        Op::Gemm(a) => {
            matmul::gemm(lane, a, inputs[0], inputs[1], inputs.get(2).copied())?.map(|t| vec![t])
        }
        Op::Binary(a) => elementwise::binary(lane, a.kind, inputs[0], inputs[1], out_dtype(outs))?
            .map(|t| vec![t]),
        Op::Unary(a) => elementwise::unary(lane, a.kind, inputs[0])?.map(|t| vec![t]),
        Op::Gelu(a) => elementwise::gelu(lane, a.tanh_approximation, inputs[0])?.map(|t| vec![t]),
        Op::Clip(a) => elementwise::clip(lane, a.min, a.max, inputs[0])?.map(|t| vec![t]),
        Op::Where => elementwise::select(lane, inputs[0], inputs[1], inputs[2])?.map(|t| vec![t]),
        Op::Cast(a) => elementwise::cast(lane, inputs[0], a.to)?.map(|t| vec![t]),
        Op::Softmax(a) => norm::softmax(lane, inputs[0], a.axis, a.log)?.map(|t| vec![t]),
        Op::LayerNorm(a) => norm::layer_norm(
            lane,
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
            a.axis,
            a.epsilon,
        )?
        .map(|t| vec![t]),
        Op::RmsNorm(a) => {
            norm::rms_norm(lane, inputs[0], inputs[1], a.axis, a.epsilon)?.map(|t| vec![t])
        }
        Op::Reduce(a) => norm::reduce(lane, inputs[0], a)?.map(|t| vec![t]),
        Op::CumSum(a) => norm::cumsum(lane, inputs[0], a)?.map(|t| vec![t]),
        Op::Reshape(a) => Some(vec![movement::reshape(inputs[0], &a.shape)?]),
        Op::Transpose(a) => Some(vec![movement::transpose(lane, inputs[0], &a.perm)?]),
        Op::Concat(a) => Some(vec![movement::concat(lane, inputs, a.axis)?]),
        Op::Split(a) => Some(movement::split(lane, inputs[0], a.axis, &a.sizes)?),
        Op::Slice(a) => Some(vec![movement::slice(lane, inputs[0], a)?]),
        Op::Expand(a) => Some(vec![movement::expand(lane, inputs[0], &a.shape)?]),
        Op::Gather(a) => {
            movement::gather(lane, inputs[0], inputs[1], a.axis, None)?.map(|t| vec![t])
        }
        Op::Trilu(a) => Some(vec![movement::trilu(lane, inputs[0], a.upper, a.k)?]),
        Op::Einsum(_)
        | Op::GatherNd(_)
        | Op::GatherElements(_)
        | Op::Attention(_)
        | Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::Pool(_)
        | Op::Pad(_)
        | Op::HardSigmoid(_)
        | Op::Quantize(_)
        | Op::Dequantize
        | Op::Resize(_)
        | Op::ArgReduce(_)
        | Op::TopK(_)
        | Op::ScatterElements(_)
        | Op::ScatterNd(_) => None,
    };
    let mut results = match device {
        Some(r) => r,
        None => fallback::on_host(lane, op, inputs)?,
    };
    // Trailing optional outputs the plan does not bind (Attention's present_* / qk output).
    if results.len() > outs.len()
        && tessera_ir::infer::required_outputs(op, results.len()) <= outs.len()
    {
        results.truncate(outs.len());
    }
    check_outputs(op, &results, outs)?;
    Ok(results)
}

/// Vocabulary-parallel gather along axis 0: rows `[offset, offset + rows)` of a
/// `full_rows`-row table are held here; other indices give zeros.
pub fn sharded_gather(
    lane: &Lane,
    table: &DeviceTensor,
    indices: &DeviceTensor,
    offset: usize,
    rows: usize,
    full_rows: usize,
) -> Result<DeviceTensor, CudaError> {
    movement::gather(lane, table, indices, 0, Some((offset, rows, full_rows)))?
        .ok_or_else(|| CudaError::Unsupported("sharded gather needs integer indices".into()))
}

fn out_dtype(outs: &[OutSpec<'_>]) -> Option<DType> {
    outs.first().map(|o| o.dtype)
}

fn check_outputs(op: &Op, got: &[DeviceTensor], outs: &[OutSpec<'_>]) -> Result<(), CudaError> {
    if got.len() != outs.len() {
        return Err(CudaError::Plan(format!(
            "{} produced {} outputs, the plan expects {}",
            op.name(),
            got.len(),
            outs.len()
        )));
    }
    for (i, (t, OutSpec { dtype, shape })) in got.iter().zip(outs).enumerate() {
        if t.shape != *shape || Class::of(t.dtype) != Class::of(*dtype) {
            return Err(CudaError::Plan(format!(
                "{} output {i}: computed {} {:?}, the plan expects {dtype} {shape:?}",
                op.name(),
                t.dtype,
                t.shape
            )));
        }
    }
    Ok(())
}
