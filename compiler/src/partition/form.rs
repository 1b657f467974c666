//! Local forms: one way an op can run on the ranks of a 1-D mesh.
use super::ragged::Grains;
use crate::cost::OpWork;
use tessera_ir::plan::AxisSlice;
use tessera_ir::{Graph, Layout, NodeId, Op, TensorId};

/// An operand a local form reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operand {
    /// A logical tensor in a layout.
    Tensor {
        /// The tensor.
        t: TensorId,
        /// Its layout.
        layout: Layout,
    },
    /// A contiguous section of a weight (from the fused-projection rewrite), held in
    /// `layout`: Replicated (the whole section) or Split along the section's axis.
    View {
        /// The weight.
        t: TensorId,
        /// The section.
        section: (usize, usize, usize),
        /// Its layout.
        layout: Layout,
    },
}

impl Operand {
    /// The layout of the operand.
    pub fn layout(&self) -> Layout {
        match self {
            Operand::Tensor { layout, .. } | Operand::View { layout, .. } => *layout,
        }
    }

    /// The section as an [`AxisSlice`], for views.
    pub fn section(&self) -> Option<AxisSlice> {
        match self {
            Operand::View {
                section: (axis, start, end),
                ..
            } => Some(AxisSlice {
                axis: *axis,
                start: *start,
                end: *end,
            }),
            Operand::Tensor { .. } => None,
        }
    }
}

/// How a local form is lowered to plan steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lowering {
    /// The node's op with rank-local attributes (Split outputs lower to a Slice each).
    Op,
    /// Vocab-parallel gather on a table split along axis 0 (output Partial).
    ShardedGather,
    /// Attention with Q split by heads and K, V replicated: each rank first slices the one
    /// key/value head its query heads read, then runs the op on its heads.
    KvHeadSlice,
    /// `X · W[:, section] (+ b[section])`: the `matmul` node (and the bias `add` node) run
    /// on weight sections, replacing a Split/Slice of the fused projection.
    FusedSection {
        /// The fused MatMul node.
        matmul: NodeId,
        /// The bias Add node, when the projection has a bias.
        add: Option<NodeId>,
    },
}

/// One local form of (one output of) a node: input layouts → output layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalForm {
    /// Name of the rule of the table that produced it.
    pub rule: &'static str,
    /// The node.
    pub node: NodeId,
    /// Which output of the node this form produces.
    pub out_index: usize,
    /// The produced tensor.
    pub tensor: TensorId,
    /// Operands read.
    pub inputs: Vec<Operand>,
    /// Output layout.
    pub out: Layout,
    /// FLOPs per rank.
    pub flops: u64,
    /// How it lowers.
    pub lowering: Lowering,
}

/// Bytes of a tensor (logical).
pub fn tensor_bytes(g: &Graph, t: TensorId) -> u64 {
    let info = g.tensor(t);
    (tessera_ir::numel(&info.shape) * info.dtype.size_bytes()) as u64
}

/// Stored bytes a rank holds for a part of shape `local` of tensor `t`: for a weight its
/// stored size ([`tessera_ir::Weight::part_bytes`]: int8 bytes plus scale and zero-point
/// blocks for a quantised weight), else the logical size.
pub fn part_bytes(g: &Graph, t: TensorId, local: &[usize]) -> u64 {
    match g.weights.get(&t) {
        Some(w) => w.part_bytes(local) as u64,
        None => (tessera_ir::numel(local) * g.tensor(t).dtype.size_bytes()) as u64,
    }
}

/// Local shape of an operand (the largest rank's, see [`Grains::local`]), or None when the
/// layout does not split it.
pub fn operand_local_shape(
    g: &Graph,
    grains: &Grains,
    op: &Operand,
    n: usize,
) -> Option<Vec<usize>> {
    match op {
        Operand::Tensor { t, layout } => grains.local(*layout, &g.tensor(*t).shape, n),
        Operand::View {
            t,
            section: (axis, start, end),
            layout,
        } => {
            let mut s = g.tensor(*t).shape.clone();
            *s.get_mut(*axis)? = end - start;
            grains.local(*layout, &s, n)
        }
    }
}

/// What a form does on one rank, for the cost model: its FLOPs, the bytes of its local
/// operands and output, and for a matrix product its `(M, N, K)` (N the output's last axis,
/// M the rest of the output, K from the FLOPs `2·M·N·K`).
pub fn form_work(g: &Graph, grains: &Grains, n: usize, f: &LocalForm) -> OpWork {
    let size = |t: TensorId| g.tensor(t).dtype.size_bytes();
    let mut bytes = 0usize;
    for o in &f.inputs {
        let (Operand::Tensor { t, .. } | Operand::View { t, .. }) = o;
        if let Some(s) = operand_local_shape(g, grains, o, n) {
            bytes += tessera_ir::numel(&s) * size(*t);
        }
    }
    let out = grains
        .local(f.out, &g.tensor(f.tensor).shape, n)
        .unwrap_or_default();
    let out_numel = tessera_ir::numel(&out);
    bytes += out_numel * size(f.tensor);
    let is_gemm = matches!(f.lowering, Lowering::FusedSection { .. })
        || matches!(g.node(f.node).op, Op::MatMul(_) | Op::Gemm(_));
    let gemm = (is_gemm && out_numel > 0 && f.flops > 0).then(|| {
        let cols = out.last().copied().unwrap_or(1).max(1);
        let k = (f.flops / (2 * out_numel as u64)).max(1) as usize;
        (out_numel / cols, cols, k)
    });
    OpWork {
        flops: f.flops,
        bytes: bytes as u64,
        gemm,
    }
}

/// What converting a replicated tensor `t` to one addend of a partial sum costs on one rank:
/// one division per element, read and written once.
pub fn scale_work(g: &Graph, t: TensorId) -> OpWork {
    let numel = tessera_ir::numel(&g.tensor(t).shape) as u64;
    OpWork {
        flops: numel,
        bytes: 2 * tensor_bytes(g, t),
        gemm: None,
    }
}
