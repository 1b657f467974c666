//! THE rule table: every way an op may run distributed, as declarative rules.
//!
//! Each row names the op family, the operand layouts it needs, the output layout it gives
//! and the shape condition under which it fires. The `forms` function of a row only
//! instantiates that signature for a concrete node (which axis, which operands broadcast);
//! the e-graph rewrites ([`super::egraph`]) turn each instance into an e-node.
//! `R` = replicated, `S(a)` = split on axis a, `P` = partial sum, `N` = number of devices.
mod attention;
mod gemm;
mod matmul;
mod movement;
mod pointwise;

use super::form::{operand_local_shape, LocalForm, Lowering, Operand};
use crate::cost::op_flops;
use tessera_ir::spec::Partitioning;
use tessera_ir::{Graph, Layout, NodeId, Op, TensorId};

/// What a rule instance gives before validation: operands, output layout, lowering.
pub(crate) type Sig = (Vec<Operand>, Layout, Lowering);

/// Context of rule instantiation.
pub struct RuleCx<'a> {
    /// The graph.
    pub g: &'a Graph,
    /// Devices.
    pub n: usize,
    /// Producer of each tensor.
    pub producers: Vec<Option<NodeId>>,
    /// Limits of the extractions run in this context.
    pub limits: crate::partition::extract::ExtractLimits,
}

impl<'a> RuleCx<'a> {
    /// A context for `g` on `n` devices.
    pub fn new(g: &'a Graph, n: usize) -> Self {
        RuleCx {
            g,
            n,
            producers: g.producers(),
            limits: Default::default(),
        }
    }
    pub(crate) fn shape(&self, t: TensorId) -> &[usize] {
        &self.g.tensor(t).shape
    }
    pub(crate) fn is_weight(&self, t: TensorId) -> bool {
        self.g.weights.contains_key(&t)
    }
}

/// One row of the rule table.
pub struct Rule {
    /// Rule name (appears in the plan summary and docs).
    pub name: &'static str,
    /// Ops it applies to.
    pub ops: &'static str,
    /// Operand layouts.
    pub inputs: &'static str,
    /// Output layout.
    pub output: &'static str,
    /// Shape condition.
    pub condition: &'static str,
    /// Instantiates the rule for output `out` of a node.
    pub forms: fn(&RuleCx, NodeId, usize) -> Vec<Sig>,
}

/// The rule table.
pub const RULES: &[Rule] = &[
    Rule { name: "replicated", ops: "any", inputs: "all R", output: "R", condition: "always (the fallback)", forms: replicated },
    Rule { name: "matmul-column", ops: "MatMul", inputs: "A: R, B: S(last)", output: "S(last)", condition: "N | B.cols", forms: matmul::column },
    Rule { name: "matmul-row", ops: "MatMul", inputs: "A: S(last), B: S(rank-2)", output: "P", condition: "N | K", forms: matmul::row },
    Rule { name: "matmul-lhs-rows", ops: "MatMul", inputs: "A: S(rank-2), B: R", output: "S(rank-2)", condition: "N | M", forms: matmul::lhs_rows },
    Rule { name: "matmul-batch", ops: "MatMul", inputs: "A: S(b) | R if extent 1, B: S(b) | R if extent 1", output: "S(b)", condition: "b a batch axis, N | extent (attention heads)", forms: matmul::batch },
    Rule { name: "matmul-partial", ops: "MatMul", inputs: "A: P, B: R  |  A: R, B: P", output: "P", condition: "float", forms: matmul::partial },
    Rule { name: "gemm-column", ops: "Gemm", inputs: "A: R, B: S(N axis), C: S(1) | R if broadcast", output: "S(1)", condition: "N | N-extent", forms: gemm::column },
    Rule { name: "gemm-row", ops: "Gemm", inputs: "A: S(K axis), B: S(K axis), C: P", output: "P", condition: "N | K", forms: gemm::row },
    Rule { name: "gemm-lhs-rows", ops: "Gemm", inputs: "A: S(M axis), B: R, C: S(0) | R if broadcast", output: "S(0)", condition: "N | M", forms: gemm::lhs_rows },
    Rule { name: "attention-heads", ops: "Attention", inputs: "Q, K, V: S(head axis: 1 for 4-D, 2 for 3-D); past: S(1); mask: S on its head axis | R if broadcast", output: "Y like Q; qk matrix S(1)", condition: "N | q heads and N | kv heads", forms: attention::heads },
    Rule { name: "fused-section", ops: "Split/Slice of X·W (+b) on the last axis", inputs: "X: R, W[:, sec]: S(1), b[sec]: S(0)", output: "S(last)", condition: "W, b weights; N | section width (a weight slice of a slice is one contiguous range per rank)", forms: matmul::fused_section },
    Rule { name: "elementwise-split", ops: "Binary, Unary, Gelu, Clip, Where, Cast, Expand", inputs: "S(a'), or R where the operand broadcasts (extent 1 / missing) on a", output: "S(a)", condition: "N | out extent on a", forms: pointwise::split },
    Rule { name: "linear-partial", ops: "Add/Sub, Neg/Identity, Reshape, Transpose, Expand, Slice, Split, Concat, ReduceSum/Mean", inputs: "all P", output: "P", condition: "float", forms: pointwise::partial },
    Rule { name: "scale-partial", ops: "Mul (either side), Div (numerator), Gather (data)", inputs: "P and R", output: "P", condition: "float; the R operand scales each addend", forms: pointwise::scale_partial },
    Rule { name: "norm-keep-split", ops: "Softmax, LayerNorm, RmsNorm, Reduce, CumSum, Trilu", inputs: "X: S(a) (a not normalised/reduced), params R", output: "S(a')", condition: "a outside the op's axes", forms: pointwise::norm_keep_split },
    Rule { name: "reshape-split", ops: "Reshape", inputs: "S(a)", output: "S(b)", condition: "same leading numel; a merges into b's outer factor, or b is a's outer factor with N | out[b] (heads: N | H)", forms: movement::reshape },
    Rule { name: "transpose-split", ops: "Transpose", inputs: "S(a)", output: "S(perm⁻¹(a))", condition: "always", forms: movement::transpose },
    Rule { name: "slice-unsplit", ops: "Split, Slice, Concat", inputs: "S(a)", output: "S(a)", condition: "a is not the split/slice/concat axis", forms: movement::slice_unsplit },
    Rule { name: "gather-vocab", ops: "Gather axis 0", inputs: "table: S(0), indices: R", output: "P (ShardedGather)", condition: "N | rows", forms: movement::gather_vocab },
    Rule { name: "gather-split", ops: "Gather", inputs: "data: S(a≠axis), idx: R  |  data: R, idx: S(j)", output: "S(a') | S(axis+j)", condition: "N | extent", forms: movement::gather_split },
];

fn replicated(cx: &RuleCx, node: NodeId, _out: usize) -> Vec<Sig> {
    let n = cx.g.node(node);
    vec![(
        n.inputs
            .iter()
            .map(|&t| Operand::Tensor {
                t,
                layout: Layout::Replicated,
            })
            .collect(),
        Layout::Replicated,
        Lowering::Op,
    )]
}

pub(crate) fn t(t: TensorId, layout: Layout) -> Operand {
    Operand::Tensor { t, layout }
}

/// Local output shape of a logical node output under `layout`.
fn is_float(g: &Graph, t: TensorId) -> bool {
    g.tensor(t).dtype.is_float()
}

/// All valid local forms of output `out` of `node` on `cx.n` devices, in table order.
/// With one device only the replicated form exists.
pub fn local_forms(cx: &RuleCx, node: NodeId, out: usize) -> Vec<LocalForm> {
    let nd = cx.g.node(node);
    let tensor = nd.outputs[out];
    let rules = if cx.n == 1 { &RULES[..1] } else { RULES };
    let mut forms: Vec<LocalForm> = Vec::new();
    for rule in rules {
        let sigs = (rule.forms)(cx, node, out);
        debug_assert!(
            sigs.is_empty() || declares(&nd.op, rule.name),
            "rule '{}' fired on {} '{}', but the op's spec (tessera_ir::spec) does not name it",
            rule.name,
            nd.op.name(),
            nd.name
        );
        for (inputs, out_layout, lowering) in sigs {
            let Some(out_shape) = out_layout.local_shape(cx.shape(tensor), cx.n) else {
                continue;
            };
            if out_layout == Layout::Partial && !is_float(cx.g, tensor) {
                continue;
            }
            let mut shapes = Vec::with_capacity(inputs.len());
            let mut ok = true;
            for o in &inputs {
                let partial_int = matches!(o, Operand::Tensor { t, layout: Layout::Partial } if !is_float(cx.g, *t));
                match operand_local_shape(cx.g, o, cx.n) {
                    Some(s) if !partial_int => shapes.push(s),
                    _ => ok = false,
                }
            }
            if !ok {
                continue;
            }
            let flops = match &lowering {
                Lowering::Op => {
                    let ins: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
                    op_flops(&nd.op, &ins, &[&out_shape])
                }
                Lowering::ShardedGather => 0,
                Lowering::FusedSection { add, .. } => {
                    let k = shapes[0].last().copied().unwrap_or(1) as u64;
                    let numel = tessera_ir::numel(&out_shape) as u64;
                    2 * numel * k + if add.is_some() { numel } else { 0 }
                }
            };
            let form = LocalForm {
                rule: rule.name,
                node,
                out_index: out,
                tensor,
                inputs,
                out: out_layout,
                flops,
                lowering,
            };
            if !forms.iter().any(|f| {
                f.inputs == form.inputs && f.out == form.out && f.lowering == form.lowering
            }) {
                forms.push(form);
            }
        }
    }
    forms
}

/// Does `op`'s spec name `rule` among its partitionings (the fallback `replicated` always
/// applies)? Each op family declares its rows in `tessera_ir::spec`; a rule that fires on
/// an op that does not declare it is drift between the two.
fn declares(op: &Op, rule: &str) -> bool {
    rule == "replicated"
        || matches!(op.spec().partitioning(), Partitioning::Rules(rules) if rules.contains(&rule))
}

/// Is `op` a pure elementwise op for the split rule (Expand included)?
pub(crate) fn elementwise_like(op: &Op) -> bool {
    op.is_elementwise() || matches!(op, Op::Expand(_))
}
