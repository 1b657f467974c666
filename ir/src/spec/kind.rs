//! [`OpKind`]: one tag per [`Op`] variant, with a sample of each so that tests can walk
//! every op (inference, cost, kernels, partitioning).
//!
//! Adding an [`Op`] variant breaks the build in [`Op::kind`] until the variant is listed in
//! `op_kinds!` below, and then in [`OpKind::sample`] until it has a sample.
use crate::op::*;
use crate::{DType, Op};

/// A representative op of a kind with input dtypes and shapes it accepts. Every axis of a
/// sample has extent ≥ 2, so that integer inputs with values in `0..2` are valid indices.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The op.
    pub op: Op,
    /// Its inputs' dtypes and shapes.
    pub inputs: Vec<(DType, Vec<usize>)>,
}

macro_rules! op_kinds {
    ($($k:ident),* $(,)?) => {
        /// The variant of an [`Op`], without its attributes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $(
                #[doc = concat!("[`Op::", stringify!($k), "`]")]
                $k,
            )*
        }

        impl OpKind {
            /// Every kind, in the order of the [`Op`] enum.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$k),*];
        }
    };
}

op_kinds!(
    MatMul,
    Gemm,
    Einsum,
    Binary,
    Unary,
    Gelu,
    Clip,
    Softmax,
    LayerNorm,
    RmsNorm,
    Reduce,
    Reshape,
    Transpose,
    Concat,
    Split,
    Slice,
    Gather,
    GatherNd,
    GatherElements,
    Expand,
    Where,
    Cast,
    Trilu,
    CumSum,
    Attention,
    Conv,
    ConvTranspose,
    Pool,
    Pad,
    HardSigmoid,
    Resize,
    ArgReduce,
    TopK,
    ScatterElements,
    ScatterNd,
    Quantize,
    Dequantize,
);

impl Op {
    /// The variant of this op.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::MatMul(_) => OpKind::MatMul,
            Op::Gemm(_) => OpKind::Gemm,
            Op::Einsum(_) => OpKind::Einsum,
            Op::Binary(_) => OpKind::Binary,
            Op::Unary(_) => OpKind::Unary,
            Op::Gelu(_) => OpKind::Gelu,
            Op::Clip(_) => OpKind::Clip,
            Op::Softmax(_) => OpKind::Softmax,
            Op::LayerNorm(_) => OpKind::LayerNorm,
            Op::RmsNorm(_) => OpKind::RmsNorm,
            Op::Reduce(_) => OpKind::Reduce,
            Op::Reshape(_) => OpKind::Reshape,
            Op::Transpose(_) => OpKind::Transpose,
            Op::Concat(_) => OpKind::Concat,
            Op::Split(_) => OpKind::Split,
            Op::Slice(_) => OpKind::Slice,
            Op::Gather(_) => OpKind::Gather,
            Op::GatherNd(_) => OpKind::GatherNd,
            Op::GatherElements(_) => OpKind::GatherElements,
            Op::Expand(_) => OpKind::Expand,
            Op::Where => OpKind::Where,
            Op::Cast(_) => OpKind::Cast,
            Op::Trilu(_) => OpKind::Trilu,
            Op::CumSum(_) => OpKind::CumSum,
            Op::Attention(_) => OpKind::Attention,
            Op::Conv(_) => OpKind::Conv,
            Op::ConvTranspose(_) => OpKind::ConvTranspose,
            Op::Pool(_) => OpKind::Pool,
            Op::Pad(_) => OpKind::Pad,
            Op::HardSigmoid(_) => OpKind::HardSigmoid,
            Op::Resize(_) => OpKind::Resize,
            Op::ArgReduce(_) => OpKind::ArgReduce,
            Op::TopK(_) => OpKind::TopK,
            Op::ScatterElements(_) => OpKind::ScatterElements,
            Op::ScatterNd(_) => OpKind::ScatterNd,
            Op::Quantize(_) => OpKind::Quantize,
            Op::Dequantize => OpKind::Dequantize,
        }
    }
}

impl OpKind {
    /// A representative op of this kind and inputs it accepts.
    pub fn sample(self) -> Sample {
        use DType::{Bool, F32, I64};
        let x = |s: &[usize]| (F32, s.to_vec());
        let (op, inputs) = match self {
            OpKind::MatMul => (Op::MatMul(MatMulAttrs {}), vec![x(&[2, 3, 4]), x(&[4, 5])]),
            OpKind::Gemm => (
                Op::Gemm(GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: true,
                }),
                vec![x(&[3, 4]), x(&[5, 4]), x(&[5])],
            ),
            OpKind::Einsum => (
                Op::Einsum(EinsumAttrs {
                    equation: "bij,bjk->bik".into(),
                }),
                vec![x(&[2, 3, 4]), x(&[2, 4, 5])],
            ),
            OpKind::Binary => (
                Op::Binary(BinaryAttrs {
                    kind: BinaryOp::Add,
                }),
                vec![x(&[2, 3]), x(&[3])],
            ),
            OpKind::Unary => (
                Op::Unary(UnaryAttrs { kind: UnaryOp::Exp }),
                vec![x(&[2, 3])],
            ),
            OpKind::Gelu => (
                Op::Gelu(GeluAttrs {
                    tanh_approximation: false,
                }),
                vec![x(&[2, 3])],
            ),
            OpKind::Clip => (
                Op::Clip(ClipAttrs {
                    min: Some(-0.5),
                    max: Some(0.5),
                }),
                vec![x(&[2, 3])],
            ),
            OpKind::Softmax => (
                Op::Softmax(SoftmaxAttrs {
                    axis: 1,
                    log: false,
                }),
                vec![x(&[2, 3])],
            ),
            OpKind::LayerNorm => (
                Op::LayerNorm(NormAttrs {
                    axis: 1,
                    epsilon: 1e-5,
                }),
                vec![x(&[2, 8]), x(&[8]), x(&[8])],
            ),
            OpKind::RmsNorm => (
                Op::RmsNorm(NormAttrs {
                    axis: 1,
                    epsilon: 1e-5,
                }),
                vec![x(&[2, 8]), x(&[8])],
            ),
            OpKind::Reduce => (
                Op::Reduce(ReduceAttrs {
                    kind: ReduceKind::Sum,
                    axes: vec![1],
                    keepdims: true,
                }),
                vec![x(&[2, 3, 4])],
            ),
            OpKind::Reshape => (
                Op::Reshape(ReshapeAttrs { shape: vec![6, 4] }),
                vec![x(&[2, 3, 4])],
            ),
            OpKind::Transpose => (
                Op::Transpose(TransposeAttrs {
                    perm: vec![2, 0, 1],
                }),
                vec![x(&[2, 3, 4])],
            ),
            OpKind::Concat => (
                Op::Concat(AxisAttrs { axis: 1 }),
                vec![x(&[2, 3]), x(&[2, 2])],
            ),
            OpKind::Split => (
                Op::Split(SplitAttrs {
                    axis: 1,
                    sizes: vec![2, 4],
                }),
                vec![x(&[2, 6])],
            ),
            OpKind::Slice => (
                Op::Slice(SliceAttrs {
                    axes: vec![1],
                    starts: vec![1],
                    ends: vec![5],
                    steps: vec![2],
                }),
                vec![x(&[2, 6])],
            ),
            OpKind::Gather => (
                Op::Gather(AxisAttrs { axis: 0 }),
                vec![x(&[5, 4]), (I64, vec![2, 3])],
            ),
            OpKind::GatherNd => (
                Op::GatherNd(GatherNdAttrs { batch_dims: 0 }),
                vec![x(&[3, 4, 5]), (I64, vec![2, 2])],
            ),
            OpKind::GatherElements => (
                Op::GatherElements(AxisAttrs { axis: 1 }),
                vec![x(&[3, 4]), (I64, vec![2, 3])],
            ),
            OpKind::Expand => (
                Op::Expand(ExpandAttrs { shape: vec![2, 3] }),
                vec![x(&[1, 3])],
            ),
            OpKind::Where => (Op::Where, vec![(Bool, vec![2, 3]), x(&[2, 3]), x(&[3])]),
            OpKind::Cast => (Op::Cast(CastAttrs { to: I64 }), vec![x(&[2, 3])]),
            OpKind::Trilu => (
                Op::Trilu(TriluAttrs { upper: true, k: 0 }),
                vec![x(&[2, 3, 3])],
            ),
            OpKind::CumSum => (
                Op::CumSum(CumSumAttrs {
                    axis: 1,
                    exclusive: false,
                    reverse: false,
                }),
                vec![x(&[2, 3])],
            ),
            OpKind::Attention => (
                Op::Attention(AttentionAttrs {
                    is_causal: true,
                    has_past: true,
                    ..Default::default()
                }),
                // Q, K, V [B, H, S, D] with grouped KV heads, then past_key, past_value.
                vec![
                    x(&[2, 4, 3, 8]),
                    x(&[2, 2, 5, 8]),
                    x(&[2, 2, 5, 8]),
                    x(&[2, 2, 2, 8]),
                    x(&[2, 2, 2, 8]),
                ],
            ),
            OpKind::Conv => (
                Op::Conv(ConvAttrs {
                    strides: vec![2, 1],
                    dilations: vec![1, 2],
                    pads: vec![1, 0, 1, 2],
                    group: 2,
                    depthwise: false,
                }),
                vec![x(&[2, 4, 5, 6]), x(&[6, 2, 3, 2]), x(&[6])],
            ),
            OpKind::ConvTranspose => (
                Op::ConvTranspose(ConvTransposeAttrs {
                    conv: ConvAttrs {
                        strides: vec![2, 1],
                        dilations: vec![1, 2],
                        pads: vec![1, 0, 0, 1],
                        group: 2,
                        depthwise: false,
                    },
                    output_padding: vec![1, 0],
                }),
                vec![x(&[2, 4, 3, 4]), x(&[4, 3, 3, 2]), x(&[6])],
            ),
            OpKind::Pool => (
                Op::Pool(PoolAttrs {
                    kind: PoolKind::Average,
                    kernel: vec![3, 2],
                    strides: vec![2, 2],
                    dilations: vec![1, 1],
                    pads: vec![1, 0, 1, 1],
                    ceil_mode: true,
                    count_include_pad: false,
                }),
                vec![x(&[2, 3, 6, 5])],
            ),
            OpKind::Pad => (
                Op::Pad(PadAttrs {
                    pads: vec![0, 1, 2, 0, 2, -1],
                    mode: PadMode::Reflect,
                    value: 0.0,
                }),
                vec![x(&[2, 4, 5])],
            ),
            OpKind::Quantize => (
                Op::Quantize(QuantizeAttrs { to: DType::U8 }),
                vec![x(&[2, 3]), x(&[]), x(&[])],
            ),
            OpKind::Dequantize => (
                Op::Dequantize,
                vec![(DType::U8, vec![2, 3]), x(&[3]), x(&[])],
            ),
            OpKind::HardSigmoid => (
                Op::HardSigmoid(HardSigmoidAttrs {
                    alpha: 1.0 / 6.0,
                    beta: 0.5,
                    swish: true,
                }),
                vec![x(&[2, 3])],
            ),
            OpKind::Resize => (
                Op::Resize(ResizeAttrs {
                    mode: ResizeMode::Linear,
                    coord: ResizeCoord::HalfPixel,
                    nearest: ResizeNearest::RoundPreferFloor,
                    cubic_a: -0.75,
                    exclude_outside: false,
                    antialias: false,
                    extrapolation_value: 0.0,
                    axes: vec![2, 3],
                    sizes: vec![6, 3],
                    scales: vec![2.0, 0.75],
                    roi: vec![],
                }),
                vec![x(&[2, 3, 3, 4])],
            ),
            OpKind::ArgReduce => (
                Op::ArgReduce(ArgReduceAttrs {
                    max: true,
                    axis: 1,
                    keepdims: false,
                    select_last_index: false,
                }),
                vec![x(&[2, 3, 4])],
            ),
            OpKind::TopK => (
                Op::TopK(TopKAttrs {
                    axis: 1,
                    k: 2,
                    largest: true,
                }),
                vec![x(&[2, 3, 4])],
            ),
            OpKind::ScatterElements => (
                Op::ScatterElements(ScatterElementsAttrs {
                    axis: 1,
                    reduction: ScatterReduction::Add,
                }),
                vec![x(&[3, 4]), (I64, vec![2, 3]), x(&[2, 3])],
            ),
            OpKind::ScatterNd => (
                Op::ScatterNd(ScatterNdAttrs {
                    reduction: ScatterReduction::Add,
                }),
                vec![x(&[3, 4]), (I64, vec![2, 1]), x(&[2, 4])],
            ),
        };
        Sample { op, inputs }
    }
}
