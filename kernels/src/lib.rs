//! CPU kernels, shared by constant folding, the reference executor and the CPU devices.
//!
//! One file per op family; [`eval`] dispatches on the [`Op`] variant. Floats compute in f32
//! (f16/bf16 values were widened on load), integers in i64 (wrapped to the logical dtype's
//! width where an op can overflow it), booleans as bool.
#![warn(missing_docs)]
use tessera_ir::{DType, Op, Tensor, TensorData};
use thiserror::Error;

mod arg_reduce;
mod attention;
mod binary;
mod cast;
mod conv;
mod conv_depthwise;
mod conv_depthwise_blocked;
mod conv_depthwise_flat;
mod conv_depthwise_rows;
mod conv_direct;
#[cfg(test)]
mod conv_direct_tests;
mod conv_epilogue;
mod conv_epilogue_lanes;
mod conv_few_channels;
mod conv_gemm;
mod conv_grouped;
mod conv_pointwise;
mod conv_taps;
#[cfg(test)]
mod conv_tests;
mod conv_trim;
mod cumsum;
mod einsum;
mod fused;
mod gather;
mod gemm_tile;
mod gemm_unpacked;
pub mod index;
mod lanes16;
mod matmul;
mod matmul_few_cols;
mod matmul_narrow;
mod matmul_packed;
mod movement;
mod norm;
mod pad;
mod pool;
mod pool_channels_last;
mod pool_separable;
mod qgemm;
mod range;
mod reduce;
mod resize;
mod resize_planes;
mod scatter;
mod simd;
mod simd_reduce;
mod softmax;
mod threads;
mod topk;
mod transpose2d;
mod trig;
mod trilu;
mod unary;
mod unary_math;
mod window;

pub use attention::attention_qk_factor;
pub use cast::{cast_tensor, cast_through, cast_through_supported, int_range_f32};
pub use conv_direct::{direct_available, direct_suits, PackedConvWeight};
pub use conv_epilogue::ConvActivation;
pub use conv_grouped::{grouped_conv_suits, PackedGroupedWeight};
pub use conv_trim::{trim_dead_taps, TrimmedTaps};
pub use fused::{
    eval_fused, eval_fused_outputs, AttentionMask, AttentionScale, AttentionShape,
    ElementwiseProgram, EwInstr, FusedOp, HeadLayout, HeldConvWeight, QuantMatMulOp, QuantWeight,
    ScoreTerm, SoftmaxRows,
};
pub use matmul_packed::{
    packed_matmul_suits, PackedMatMulWeight, PACKED_MAX_ROWS, PACKED_MIN_WEIGHTS,
};
pub use qgemm::{
    dequant_matmul, dequant_matmul_epilogue, int8_gemm_available, quant_matmul, ActQuant,
    PackedQWeight,
};
pub use range::range;

/// A kernel failed (bad operand types or shapes that inference should have caught).
#[derive(Debug, Error)]
#[error("{op}: {msg}")]
pub struct KernelError {
    /// Op name.
    pub op: String,
    /// What went wrong.
    pub msg: String,
}

/// Result type of the per-family kernels: a message that [`eval`] prefixes with the op name.
pub(crate) type KResult<T> = Result<T, String>;

pub(crate) use threads::{par_rows, par_rows_pair, pool_threads, split_min};
pub use threads::{polled, serial};

/// Evaluates `op` on host tensors and returns its outputs.
///
/// Every op returns one output except [`Op::Split`] (one per piece), [`Op::LayerNorm`]
/// (Y, Mean, InvStdDev, as ONNX; callers that bind only Y ignore the rest) and [`Op::TopK`]
/// (Values, Indices).
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, KernelError> {
    eval_inner(op, inputs).map_err(|msg| KernelError { op: op.name(), msg })
}

fn eval_inner(op: &Op, inputs: &[&Tensor]) -> KResult<Vec<Tensor>> {
    // The input count comes from the op's spec in ir, as for shape inference.
    op.spec().arity().check(inputs.len())?;
    let one = |t: KResult<Tensor>| t.map(|t| vec![t]);
    match op {
        Op::MatMul(_) => one(matmul::matmul(inputs[0], inputs[1])),
        Op::Gemm(a) => one(matmul::gemm(
            a,
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
        )),
        Op::Attention(a) => one(attention::attention(a, inputs)),
        Op::Einsum(a) => one(einsum::einsum(&a.equation, inputs)),
        Op::Binary(a) => one(binary::binary(a.kind, inputs[0], inputs[1])),
        Op::Where => one(binary::where_select(inputs[0], inputs[1], inputs[2])),
        Op::Unary(a) => one(unary::unary(a.kind, inputs[0])),
        Op::Gelu(a) => one(unary::gelu(a.tanh_approximation, inputs[0])),
        Op::Clip(a) => one(unary::clip(a.min, a.max, inputs[0])),
        Op::Cast(a) => Ok(vec![cast_tensor(inputs[0], a.to)]),
        Op::Softmax(a) => one(softmax::softmax(a.axis, a.log, inputs[0])),
        Op::LayerNorm(a) => norm::layer_norm(a, inputs[0], inputs[1], inputs.get(2).copied()),
        Op::RmsNorm(a) => one(norm::rms_norm(a, inputs[0], inputs[1])),
        Op::Reduce(a) => one(reduce::reduce(a, inputs[0])),
        Op::Reshape(a) => one(movement::reshape(&a.shape, inputs[0])),
        Op::Transpose(a) => one(movement::transpose(&a.perm, inputs[0])),
        Op::Concat(a) => one(movement::concat(a.axis, inputs)),
        Op::Split(a) => movement::split(a.axis, &a.sizes, inputs[0]),
        Op::Slice(a) => one(movement::slice(a, inputs[0])),
        Op::Expand(a) => one(movement::expand(&a.shape, inputs[0])),
        Op::Gather(a) => one(gather::gather(a.axis, inputs[0], inputs[1])),
        Op::GatherNd(a) => one(gather::gather_nd(a.batch_dims, inputs[0], inputs[1])),
        Op::GatherElements(a) => one(gather::gather_elements(a.axis, inputs[0], inputs[1])),
        Op::Trilu(a) => one(trilu::trilu(a.upper, a.k, inputs[0])),
        Op::CumSum(a) => one(cumsum::cumsum(a, inputs[0])),
        Op::Conv(a) => one(conv::conv(a, inputs[0], inputs[1], inputs.get(2).copied())),
        Op::ConvTranspose(a) => one(conv::conv_transpose(
            a,
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
        )),
        Op::Pool(a) => one(pool::pool(a, inputs[0])),
        Op::Pad(a) => one(pad::pad(a, inputs[0])),
        Op::Quantize(a) => one(fused::quantize_op(a.to, inputs)),
        Op::Dequantize => one(fused::dequantize_op(inputs)),
        Op::HardSigmoid(a) => one(unary::hard_sigmoid(a.alpha, a.beta, a.swish, inputs[0])),
        Op::Resize(a) => one(resize::resize(a, inputs[0])),
        Op::ArgReduce(a) => one(arg_reduce::arg_reduce(a, inputs[0])),
        Op::TopK(a) => topk::topk(a, inputs[0]),
        Op::ScatterElements(a) => one(scatter::scatter_elements(
            a.axis,
            a.reduction,
            inputs[0],
            inputs[1],
            inputs[2],
        )),
        Op::ScatterNd(a) => one(scatter::scatter_nd(
            a.reduction,
            inputs[0],
            inputs[1],
            inputs[2],
        )),
    }
}

/// Applies a generic expression to whichever storage a [`TensorData`] has, producing a
/// [`TensorData`] of the same class: `map_storage!(data, v => f(v))`.
macro_rules! map_storage {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            tessera_ir::TensorData::F32($v) => tessera_ir::TensorData::F32($body),
            tessera_ir::TensorData::I64($v) => tessera_ir::TensorData::I64($body),
            tessera_ir::TensorData::Bool($v) => tessera_ir::TensorData::Bool($body),
        }
    };
}
pub(crate) use map_storage;

/// Builds a tensor whose storage class matches `dtype` by construction.
pub(crate) fn make(dtype: DType, shape: Vec<usize>, data: TensorData) -> KResult<Tensor> {
    Tensor::new(dtype, shape, data).map_err(|e| e.to_string())
}

/// Gathers `data[idx[i]]` for every i (indices are in range by construction of the caller).
pub(crate) fn take<T: Copy>(data: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| data[i]).collect()
}

/// Wraps an integer to the range of an integer dtype (two's complement, as numpy).
pub(crate) fn wrap_int(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::I32 => v as i32 as i64,
        DType::I16 => v as i16 as i64,
        DType::I8 => v as i8 as i64,
        DType::U8 => v as u8 as i64,
        _ => v,
    }
}

/// Describes a tensor's type for error messages, e.g. `f32[2, 3]`.
pub(crate) fn describe(t: &Tensor) -> String {
    format!("{}{:?}", t.dtype, t.shape)
}

/// An element type of [`TensorData`] storage, for kernels generic over the storage class.
pub(crate) trait Elem: Copy + Default + PartialEq + std::fmt::Debug {
    /// The elements, when `data` has this storage class.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Wraps elements into storage.
    fn wrap(v: Vec<Self>) -> TensorData;
}

/// Implements [`Elem`] for the element type of one [`TensorData`] storage variant.
macro_rules! elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            fn slice(data: &TensorData) -> Option<&[$t]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<$t>) -> TensorData {
                TensorData::$variant(v)
            }
        }
    };
}

elem!(f32, F32);
elem!(i64, I64);
elem!(bool, Bool);
