//! One spec per op family: what every [`Op`] means, in one place.
//!
//! Each family file states, for its ops, the input arity, the shape/dtype inference, the
//! FLOPs and bytes the cost model charges, and how the partitioner may split the op (the
//! names of the compiler's rule-table rows that apply, or [`Partitioning::ReplicatedOnly`]).
//! Everything else dispatches through [`Op::spec`]:
//!
//! | family | file | ops |
//! |---|---|---|
//! | products | `matmul.rs` | MatMul, Gemm, Einsum |
//! | elementwise | `elementwise.rs` | Binary, Unary, Gelu, Clip, Where, Cast, HardSigmoid, Quantize, Dequantize |
//! | normalisation | `norm.rs` | Softmax, LayerNorm, RmsNorm |
//! | reductions and scans | `reduce.rs` | Reduce, ArgReduce, TopK, CumSum |
//! | data movement | `movement.rs` | Reshape, Transpose, Concat, Split, Slice, Expand, Trilu |
//! | gathers | `gather.rs` | Gather, GatherND, GatherElements |
//! | scatters | `scatter.rs` | ScatterElements, ScatterND |
//! | attention | `attention.rs` | Attention |
//! | convolution and pooling | `conv.rs` | Conv, ConvTranspose, Pool |
//! | padding | `pad.rs` | Pad |
//! | resizing | `resize.rs` | Resize |
//!
//! [`OpKind`] lists every variant with a sample (op + input types) so that tests can walk
//! all ops; a new [`Op`] variant does not compile until it has a spec, a kind and a sample.
mod attention;
mod conv;
mod elementwise;
mod gather;
mod kind;
mod matmul;
mod movement;
mod norm;
mod pad;
mod reduce;
mod resize;
mod scatter;

use crate::infer::{InferCx, TypedShape};
use crate::{numel, DType, IrError, Op};

pub use conv::{transpose_out_extent, window_out_extent};
pub use elementwise::{quant_range, DequantizeSpec, WhereSpec};
pub use gather::{GatherElementsSpec, GatherSpec};
pub use kind::{OpKind, Sample};
pub use movement::ConcatSpec;
pub use movement::{normalize_slice, slice_len};
pub use norm::{LayerNormSpec, RmsNormSpec};

/// How many inputs a node of an op takes (outputs follow from [`OpSpec::infer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arity {
    /// Fewest inputs.
    pub min: usize,
    /// Most inputs (`usize::MAX`: unbounded).
    pub max: usize,
}

impl Arity {
    /// Exactly `n` inputs.
    pub const fn exactly(n: usize) -> Arity {
        Arity { min: n, max: n }
    }

    /// `min..=max` inputs.
    pub const fn range(min: usize, max: usize) -> Arity {
        Arity { min, max }
    }

    /// At least `min` inputs.
    pub const fn at_least(min: usize) -> Arity {
        Arity {
            min,
            max: usize::MAX,
        }
    }

    /// Checks an input count; the error reads `expects 2 inputs, got 3`.
    pub fn check(self, n: usize) -> Result<(), String> {
        if n >= self.min && n <= self.max {
            return Ok(());
        }
        let want = match (self.min, self.max) {
            (a, b) if a == b => format!("{a}"),
            (a, usize::MAX) => format!("at least {a}"),
            (a, b) => format!("{a} to {b}"),
        };
        Err(format!("expects {want} inputs, got {n}"))
    }
}

/// How the partitioner may distribute an op, as data the coverage test checks against the
/// compiler's rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// The rows of the rule table (`tessera_compiler::partition::rules::RULES`, by name) that
    /// may fire on this op, besides the `replicated` fallback every op has.
    Rules(&'static [&'static str]),
    /// No distributed form: the op always runs replicated (deliberately).
    ReplicatedOnly,
}

/// The spec of one op: everything the compiler, kernels and runtime need to know about it
/// besides its kernels. Implemented by each attribute struct in its family file.
pub trait OpSpec {
    /// A short name for reports, DOT labels and errors (e.g. `MatMul`, `Add`, `Reshape`).
    fn name(&self) -> String;

    /// How many inputs a node takes (may depend on the attributes).
    fn arity(&self) -> Arity;

    /// Output dtypes and shapes from the inputs', every output the op can produce. The
    /// input count was checked against [`OpSpec::arity`] before.
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError>;

    /// How many outputs a node must bind when [`OpSpec::infer`] gives `produced`: all of
    /// them unless trailing outputs are optional.
    fn required_outputs(&self, produced: usize) -> usize {
        produced
    }

    /// Estimated floating-point operations on the given (local) input and output shapes.
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64;

    /// Bytes read and written, for memory-bound cost: every input and output once unless
    /// the op touches less (a slice, a gather).
    fn bytes(&self, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
        tensor_bytes(inputs) + tensor_bytes(outputs)
    }

    /// How the partitioner may distribute the op.
    fn partitioning(&self) -> Partitioning;

    /// Is output element i a function of the input elements at the same (broadcast)
    /// position only?
    fn is_elementwise(&self) -> bool {
        false
    }
}

/// Total bytes of a list of tensors.
pub fn tensor_bytes(tensors: &[(DType, &[usize])]) -> u64 {
    tensors
        .iter()
        .map(|(d, s)| numel(s).saturating_mul(d.size_bytes()) as u64)
        .fold(0, u64::saturating_add)
}

/// Elements of the first shape of a list (0 when empty).
fn first_numel(shapes: &[&[usize]]) -> u64 {
    shapes.first().map_or(0, |s| numel(s) as u64)
}

/// What [`Op::spec`] returns: a `&dyn OpSpec`, either the attribute struct itself or, for
/// attribute structs that several ops share ([`crate::op::NormAttrs`],
/// [`crate::op::AxisAttrs`]), a wrapper naming the op.
pub enum SpecRef<'a> {
    /// The attribute struct is the spec.
    Attrs(&'a dyn OpSpec),
    /// LayerNormalization.
    LayerNorm(norm::LayerNormSpec<'a>),
    /// RMSNormalization.
    RmsNorm(norm::RmsNormSpec<'a>),
    /// Concat.
    Concat(movement::ConcatSpec<'a>),
    /// Gather.
    Gather(gather::GatherSpec<'a>),
    /// GatherElements.
    GatherElements(gather::GatherElementsSpec<'a>),
}

impl<'a> std::ops::Deref for SpecRef<'a> {
    type Target = dyn OpSpec + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            SpecRef::Attrs(s) => *s,
            SpecRef::LayerNorm(s) => s,
            SpecRef::RmsNorm(s) => s,
            SpecRef::Concat(s) => s,
            SpecRef::Gather(s) => s,
            SpecRef::GatherElements(s) => s,
        }
    }
}

impl Op {
    /// The spec of this op (see [`OpSpec`]).
    pub fn spec(&self) -> SpecRef<'_> {
        match self {
            Op::MatMul(a) => SpecRef::Attrs(a),
            Op::Gemm(a) => SpecRef::Attrs(a),
            Op::Einsum(a) => SpecRef::Attrs(a),
            Op::Binary(a) => SpecRef::Attrs(a),
            Op::Unary(a) => SpecRef::Attrs(a),
            Op::Gelu(a) => SpecRef::Attrs(a),
            Op::Clip(a) => SpecRef::Attrs(a),
            Op::Softmax(a) => SpecRef::Attrs(a),
            Op::LayerNorm(a) => SpecRef::LayerNorm(norm::LayerNormSpec(a)),
            Op::RmsNorm(a) => SpecRef::RmsNorm(norm::RmsNormSpec(a)),
            Op::Reduce(a) => SpecRef::Attrs(a),
            Op::Reshape(a) => SpecRef::Attrs(a),
            Op::Transpose(a) => SpecRef::Attrs(a),
            Op::Concat(a) => SpecRef::Concat(movement::ConcatSpec(a)),
            Op::Split(a) => SpecRef::Attrs(a),
            Op::Slice(a) => SpecRef::Attrs(a),
            Op::Gather(a) => SpecRef::Gather(gather::GatherSpec(a)),
            Op::GatherNd(a) => SpecRef::Attrs(a),
            Op::GatherElements(a) => SpecRef::GatherElements(gather::GatherElementsSpec(a)),
            Op::Expand(a) => SpecRef::Attrs(a),
            Op::Where => SpecRef::Attrs(&WhereSpec),
            Op::Cast(a) => SpecRef::Attrs(a),
            Op::Trilu(a) => SpecRef::Attrs(a),
            Op::CumSum(a) => SpecRef::Attrs(a),
            Op::Attention(a) => SpecRef::Attrs(a),
            Op::Conv(a) => SpecRef::Attrs(a),
            Op::ConvTranspose(a) => SpecRef::Attrs(a),
            Op::Pool(a) => SpecRef::Attrs(a),
            Op::Pad(a) => SpecRef::Attrs(a),
            Op::Resize(a) => SpecRef::Attrs(a),
            Op::HardSigmoid(a) => SpecRef::Attrs(a),
            Op::ArgReduce(a) => SpecRef::Attrs(a),
            Op::TopK(a) => SpecRef::Attrs(a),
            Op::ScatterElements(a) => SpecRef::Attrs(a),
            Op::ScatterNd(a) => SpecRef::Attrs(a),
            Op::Quantize(a) => SpecRef::Attrs(a),
            Op::Dequantize => SpecRef::Attrs(&DequantizeSpec),
        }
    }

    /// A short name for reports and DOT labels (e.g. `MatMul`, `Add`, `Reshape`).
    pub fn name(&self) -> String {
        self.spec().name()
    }

    /// Is this an elementwise op whose output element i depends only on input elements at
    /// the same (broadcast) position?
    pub fn is_elementwise(&self) -> bool {
        self.spec().is_elementwise()
    }
}

#[cfg(test)]
mod tests;
