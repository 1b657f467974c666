//! The closed set of ops of the IR, one attribute struct per op.
//!
//! These are the ops left after import: every shape-computing subgraph has been folded, so
//! ops whose ONNX form takes shape/axes tensors (Reshape, Expand, Slice, Split, ReduceMean, ...)
//! carry them here as static attributes with all axes normalised to be non-negative.
//! Squeeze, Unsqueeze and Flatten import as [`Op::Reshape`]; Dropout and Identity as
//! [`UnaryOp::Identity`].
use crate::DType;
use serde::{Deserialize, Serialize};

pub use crate::op_more::{ScatterElementsAttrs, ScatterNdAttrs, ScatterReduction, TopKAttrs};

/// An IR op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// numpy-style matmul with broadcasting of batch dims (inputs: A, B).
    MatMul(MatMulAttrs),
    /// Gemm: alpha·op(A)·op(B) + beta·C (inputs: A, B, optional C).
    Gemm(GemmAttrs),
    /// Einsum in a matmul-like form (inputs: operands).
    Einsum(EinsumAttrs),
    /// Broadcasting elementwise binary op (inputs: A, B).
    Binary(BinaryAttrs),
    /// Elementwise unary op (input: X).
    Unary(UnaryAttrs),
    /// GELU (input: X).
    Gelu(GeluAttrs),
    /// Clip to [min, max] (input: X).
    Clip(ClipAttrs),
    /// Softmax / LogSoftmax over one axis (input: X).
    Softmax(SoftmaxAttrs),
    /// LayerNormalization over axes `axis..rank` (inputs: X, Scale, optional Bias; outputs:
    /// Y, or Y, Mean and InvStdDev).
    LayerNorm(NormAttrs),
    /// RMSNormalization over axes `axis..rank` (inputs: X, Scale).
    RmsNorm(NormAttrs),
    /// Reduction over axes (input: X).
    Reduce(ReduceAttrs),
    /// Reshape to a static shape (input: X). Also Squeeze/Unsqueeze/Flatten.
    Reshape(ReshapeAttrs),
    /// Transpose (input: X).
    Transpose(TransposeAttrs),
    /// Concat along an axis (inputs: X...).
    Concat(AxisAttrs),
    /// Split into pieces of given sizes along an axis (input: X; one output per piece).
    Split(SplitAttrs),
    /// Static strided slice (input: X).
    Slice(SliceAttrs),
    /// Gather along an axis (inputs: Data, Indices).
    Gather(AxisAttrs),
    /// GatherND (inputs: Data, Indices).
    GatherNd(GatherNdAttrs),
    /// GatherElements along an axis (inputs: Data, Indices of the same rank; the output has
    /// the shape of Indices).
    GatherElements(AxisAttrs),
    /// Broadcast to a static shape (input: X).
    Expand(ExpandAttrs),
    /// Select (inputs: Cond, X, Y).
    Where,
    /// Type conversion (input: X).
    Cast(CastAttrs),
    /// Upper/lower triangle of the last two axes (input: X).
    Trilu(TriluAttrs),
    /// Cumulative sum along an axis (input: X).
    CumSum(CumSumAttrs),
    /// ONNX Attention (opsets 23–25): inputs Q, K, V, then the optional ones the attributes
    /// say are present (attn_mask, past_key + past_value, nonpad_kv_seqlen); one output: Y,
    /// or the `qk_matmul_output` matrix when `qk_output`. (The importer builds
    /// `present_key` / `present_value` as Concat of the past and the new heads.)
    Attention(AttentionAttrs),
    /// Convolution (inputs: X `[N, C, D1..]`, W `[M, C/group, K1..]`, optional B `[M]`).
    Conv(ConvAttrs),
    /// Transposed convolution (inputs: X `[N, C, D1..]`, W `[C, M/group, K1..]`, optional
    /// B `[M]`).
    ConvTranspose(ConvTransposeAttrs),
    /// Max or average pooling over the spatial axes `2..` (input: X `[N, C, D1..]`).
    Pool(PoolAttrs),
    /// Pad every axis (input: X).
    Pad(PadAttrs),
    /// `max(0, min(1, alpha·x + beta))`, times x for HardSwish (input: X).
    HardSigmoid(HardSigmoidAttrs),
    /// Resize by interpolation (nearest, N-linear or cubic) of some axes (input: X).
    Resize(ResizeAttrs),
    /// Index of the largest or smallest element along one axis, as i64 (input: X).
    ArgReduce(ArgReduceAttrs),
    /// The `k` largest or smallest elements along one axis, in order, and their indices
    /// (input: X; outputs: Values, Indices as i64).
    TopK(TopKAttrs),
    /// ScatterElements along an axis (inputs: Data, Indices of Data's rank, Updates of the
    /// indices' shape; the output has the data's shape).
    ScatterElements(ScatterElementsAttrs),
    /// ScatterND (inputs: Data, Indices `[..., k]`, Updates `indices[..-1] ++ data[k..]`).
    ScatterNd(ScatterNdAttrs),
    /// Linear quantisation to an integer type: `clamp(round(x / scale) + zero_point)` to the
    /// type's range, rounding ties to even (inputs: X, Scale, ZeroPoint, both float and
    /// broadcasting to X). The canonical form of QuantizeLinear on an activation.
    Quantize(QuantizeAttrs),
    /// Linear dequantisation: `(q − zero_point) · scale` (inputs: Q of an integer type,
    /// Scale, ZeroPoint, both float and broadcasting to Q; the output has Scale's type). The
    /// canonical form of DequantizeLinear on an activation.
    Dequantize,
}

/// MatMul has no attributes; the struct exists so every op has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatMulAttrs {}

/// Gemm attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmAttrs {
    /// Scale of A·B.
    #[serde(with = "crate::nonfinite::one")]
    pub alpha: f32,
    /// Scale of C.
    #[serde(with = "crate::nonfinite::one")]
    pub beta: f32,
    /// Transpose A.
    pub trans_a: bool,
    /// Transpose B.
    pub trans_b: bool,
}

/// Einsum equation, e.g. `"bhid,bhjd->bhij"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EinsumAttrs {
    /// The equation, whitespace removed, with an explicit `->` output.
    pub equation: String,
}

/// Binary elementwise kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (integer division truncates, as ONNX)
    Div,
    /// a ^ b
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// a % b with `fmod` semantics chosen by attribute
    Mod {
        /// C fmod (sign of dividend) when true, Python mod (sign of divisor) otherwise.
        fmod: bool,
    },
    /// a == b (bool output)
    Equal,
    /// a < b
    Less,
    /// a <= b
    LessOrEqual,
    /// a > b
    Greater,
    /// a >= b
    GreaterOrEqual,
    /// logical and (bool), bitwise and (integers)
    And,
    /// logical or (bool), bitwise or (integers)
    Or,
    /// logical xor (bool), bitwise xor (integers)
    Xor,
    /// Integer shift of a by b bits: left, or arithmetic right; a shift outside
    /// `0..width` gives 0 (-1 for a right shift of a negative a), as ONNX BitShift.
    BitShift {
        /// Shift left (else right).
        left: bool,
    },
}

/// Binary op attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryAttrs {
    /// Which op.
    pub kind: BinaryOp,
}

/// Unary elementwise kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// x (Identity, Dropout at inference)
    Identity,
    /// -x
    Neg,
    /// |x|
    Abs,
    /// sqrt(x)
    Sqrt,
    /// 1/x
    Reciprocal,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// erf(x)
    Erf,
    /// tanh(x)
    Tanh,
    /// 1/(1+e^-x)
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// logical not (bool), bitwise not (integers)
    Not,
    /// isnan(x) (bool output)
    IsNaN,
    /// floor(x)
    Floor,
    /// ceil(x)
    Ceil,
    /// round half to even
    Round,
    /// sin(x)
    Sin,
    /// cos(x)
    Cos,
    /// sign(x)
    Sign,
    /// ln(1+e^x)
    Softplus,
    /// x·sigmoid(x)
    Silu,
    /// tan(x)
    Tan,
    /// asin(x)
    Asin,
    /// acos(x)
    Acos,
    /// atan(x)
    Atan,
    /// sinh(x)
    Sinh,
    /// cosh(x)
    Cosh,
    /// asinh(x)
    Asinh,
    /// acosh(x)
    Acosh,
    /// atanh(x)
    Atanh,
}

/// Unary op attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnaryAttrs {
    /// Which op.
    pub kind: UnaryOp,
}

/// GELU attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeluAttrs {
    /// Tanh approximation instead of exact erf.
    pub tanh_approximation: bool,
}

/// Clip bounds (absent = unbounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipAttrs {
    /// Lower bound.
    #[serde(default, with = "crate::nonfinite::option")]
    pub min: Option<f32>,
    /// Upper bound.
    #[serde(default, with = "crate::nonfinite::option")]
    pub max: Option<f32>,
}

/// Quantize attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizeAttrs {
    /// The quantised type: uint8, int8 or int16.
    pub to: DType,
}

/// Softmax attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftmaxAttrs {
    /// Axis (non-negative).
    pub axis: usize,
    /// LogSoftmax instead of Softmax.
    pub log: bool,
}

/// LayerNorm / RMSNorm attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormAttrs {
    /// First normalised axis (non-negative); normalises `axis..rank`.
    pub axis: usize,
    /// Epsilon added to the variance.
    #[serde(with = "crate::nonfinite::one")]
    pub epsilon: f32,
}

/// Reduction kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Mean.
    Mean,
    /// Max.
    Max,
    /// Min.
    Min,
    /// Product.
    Prod,
    /// Sum of squares.
    SumSquare,
    /// sqrt(sum of squares).
    L2,
}

/// Reduction attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceAttrs {
    /// Which reduction.
    pub kind: ReduceKind,
    /// Reduced axes, sorted, non-negative (all axes when the ONNX node gave none).
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
}

/// Reshape target (fully static, no 0 or -1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReshapeAttrs {
    /// Output shape.
    pub shape: Vec<usize>,
}

/// Transpose permutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransposeAttrs {
    /// Output axis i is input axis `perm[i]`.
    pub perm: Vec<usize>,
}

/// A single non-negative axis (Concat, Gather, GatherElements).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AxisAttrs {
    /// Axis.
    pub axis: usize,
}

/// Split attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitAttrs {
    /// Axis.
    pub axis: usize,
    /// Size of each output along the axis (sums to the input extent).
    pub sizes: Vec<usize>,
}

/// Static slice, one entry per sliced axis, already clamped to the input extent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceAttrs {
    /// Sliced axes (non-negative, distinct).
    pub axes: Vec<usize>,
    /// Start index per axis (clamped, as in ONNX).
    pub starts: Vec<i64>,
    /// End index per axis (clamped; may be -1 for a negative step running to the front).
    pub ends: Vec<i64>,
    /// Step per axis (non-zero).
    pub steps: Vec<i64>,
}

/// GatherND attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatherNdAttrs {
    /// Number of leading batch dims.
    pub batch_dims: usize,
}

/// Expand target (the broadcast result shape, static).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpandAttrs {
    /// Output shape.
    pub shape: Vec<usize>,
}

/// Cast target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CastAttrs {
    /// Output dtype.
    pub to: DType,
}

/// Trilu attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriluAttrs {
    /// Keep the upper triangle (else lower).
    pub upper: bool,
    /// Diagonal offset.
    pub k: i64,
}

/// CumSum attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CumSumAttrs {
    /// Axis (non-negative).
    pub axis: usize,
    /// Exclude the current element.
    pub exclusive: bool,
    /// Sum from the end.
    pub reverse: bool,
}

/// ONNX Attention attributes, plus which optional inputs the node has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionAttrs {
    /// Causal mask, aligned to the end of the past (bottom-right).
    pub is_causal: bool,
    /// Query heads of 3-D inputs (None for 4-D inputs).
    pub q_num_heads: Option<usize>,
    /// Key/value heads of 3-D inputs (None for 4-D inputs).
    pub kv_num_heads: Option<usize>,
    /// What the fourth output holds: 0 Q·Kᵀ (after softcap), 1 the same, 2 with the mask
    /// added, 3 after softmax.
    pub qk_matmul_output_mode: u8,
    /// Scale of Q·Kᵀ (default 1/√head_size).
    #[serde(default, with = "crate::nonfinite::option")]
    pub scale: Option<f32>,
    /// `softcap · tanh(x / softcap)` on the scores when > 0.
    #[serde(with = "crate::nonfinite::one")]
    pub softcap: f32,
    /// Sliding window: keys at most this far before the query (-1: unbounded).
    pub left_window: i64,
    /// Sliding window: keys at most this far after the query (-1: unbounded).
    pub right_window: i64,
    /// Input attn_mask is present.
    pub has_mask: bool,
    /// Inputs past_key and past_value are present.
    pub has_past: bool,
    /// Input nonpad_kv_seqlen is present.
    pub has_nonpad: bool,
    /// The output is `qk_matmul_output` (per `qk_matmul_output_mode`) instead of Y.
    pub qk_output: bool,
}

impl Default for AttentionAttrs {
    /// The ONNX defaults: 4-D inputs, no causal mask, no window, no softcap, the default
    /// scale, no optional inputs, output Y.
    fn default() -> Self {
        AttentionAttrs {
            is_causal: false,
            q_num_heads: None,
            kv_num_heads: None,
            qk_matmul_output_mode: 0,
            scale: None,
            softcap: 0.0,
            left_window: -1,
            right_window: -1,
            has_mask: false,
            has_past: false,
            has_nonpad: false,
            qk_output: false,
        }
    }
}

/// Convolution attributes, with every spatial list of the same length (the number of spatial
/// axes) and `auto_pad` already resolved into explicit pads at import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvAttrs {
    /// Stride per spatial axis (>= 1).
    pub strides: Vec<usize>,
    /// Dilation per spatial axis (>= 1).
    pub dilations: Vec<usize>,
    /// Padding: the begins of every spatial axis, then the ends.
    pub pads: Vec<usize>,
    /// Number of channel groups (C and M are multiples of it).
    pub group: usize,
    /// Depthwise: one group per input channel whatever the channel count (`group` is then
    /// C of the whole tensor), so that a rank holding C/N channels convolves them alone.
    #[serde(default)]
    pub depthwise: bool,
}

/// Transposed convolution attributes (`output_shape` / `auto_pad` resolved into pads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvTransposeAttrs {
    /// Strides, dilations, pads (cropped from the full output) and group, as [`ConvAttrs`].
    pub conv: ConvAttrs,
    /// Extra elements added at the end of each spatial axis of the output.
    pub output_padding: Vec<usize>,
}

/// Pooling kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// MaxPool.
    Max,
    /// AveragePool.
    Average,
}

/// Pooling attributes (one entry per spatial axis; pads begins then ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAttrs {
    /// Max or average.
    pub kind: PoolKind,
    /// Window extent per spatial axis.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis (>= 1).
    pub strides: Vec<usize>,
    /// Dilation per spatial axis (>= 1).
    pub dilations: Vec<usize>,
    /// Padding: the begins of every spatial axis, then the ends.
    pub pads: Vec<usize>,
    /// Round the output extent up (a last window that starts inside the input or the begin
    /// padding is kept).
    pub ceil_mode: bool,
    /// Average: padding elements count in the divisor.
    pub count_include_pad: bool,
}

/// Pad modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

/// Pad attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PadAttrs {
    /// Elements added (negative: removed) at the begin of every axis, then at the end.
    pub pads: Vec<i64>,
    /// How new elements are filled.
    pub mode: PadMode,
    /// The fill value of constant mode.
    #[serde(with = "crate::nonfinite::one")]
    pub value: f32,
}

/// HardSigmoid / HardSwish attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardSigmoidAttrs {
    /// Slope.
    #[serde(with = "crate::nonfinite::one")]
    pub alpha: f32,
    /// Offset.
    #[serde(with = "crate::nonfinite::one")]
    pub beta: f32,
    /// Multiply by the input (HardSwish).
    pub swish: bool,
}

/// ArgMax / ArgMin attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArgReduceAttrs {
    /// ArgMax (else ArgMin).
    pub max: bool,
    /// The reduced axis (non-negative).
    pub axis: usize,
    /// Keep the reduced axis as size 1.
    pub keepdims: bool,
    /// On ties, the last index holding the extreme value (else the first).
    pub select_last_index: bool,
}

/// Resize interpolation modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The nearest input element (rounded as [`ResizeAttrs::nearest`] says).
    Nearest,
    /// Linear along each resized axis (bilinear, trilinear, ...).
    Linear,
    /// Cubic convolution along each resized axis (coefficient [`ResizeAttrs::cubic_a`]).
    Cubic,
}

/// How an output coordinate maps to an input coordinate (ONNX
/// `coordinate_transformation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeCoord {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// Half pixel, with the implicit region centred on the output.
    HalfPixelSymmetric,
    /// Half pixel, but 0 when the output extent is 1.
    PytorchHalfPixel,
    /// `x · (in - 1) / (out - 1)`.
    AlignCorners,
    /// `x / scale`.
    Asymmetric,
    /// Crop the region [`ResizeAttrs::roi`], then align corners; outside: the extrapolation
    /// value.
    TfCropAndResize,
}

/// How a nearest-mode coordinate rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeNearest {
    /// Round, halves down.
    RoundPreferFloor,
    /// Round, halves up.
    RoundPreferCeil,
    /// Down.
    Floor,
    /// Up.
    Ceil,
}

/// Resize attributes, with the scales / sizes inputs resolved at import: every entry of
/// `axes`, `sizes` and `scales` describes one resized axis; other axes pass through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeAttrs {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate transformation.
    pub coord: ResizeCoord,
    /// Rounding of nearest mode.
    pub nearest: ResizeNearest,
    /// Cubic coefficient `A`.
    #[serde(with = "crate::nonfinite::one")]
    pub cubic_a: f32,
    /// Input elements outside the tensor get weight 0 (the others are renormalised).
    pub exclude_outside: bool,
    /// Linear and cubic filters widen by 1 / scale when downsampling.
    pub antialias: bool,
    /// The value of outputs whose source lies outside the region (`tf_crop_and_resize`).
    #[serde(with = "crate::nonfinite::one")]
    pub extrapolation_value: f32,
    /// The resized axes, ascending.
    pub axes: Vec<usize>,
    /// Output extent of each resized axis.
    pub sizes: Vec<usize>,
    /// Scale (output over input extent, as the coordinate transformation uses it) of each
    /// resized axis.
    pub scales: Vec<f64>,
    /// `tf_crop_and_resize`: the region of each resized axis, starts then ends, as
    /// fractions of the input extent; empty for other modes.
    pub roi: Vec<f64>,
}
