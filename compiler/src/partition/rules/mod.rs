//! The distribution rules: every way an op may run distributed.
//!
//! The rules are data — `table.dist`, parsed and interpreted by [`dsl`]: each is a name, a
//! doc line, a pattern pair (the op with its operands = the output layout around the op with
//! each operand's layout) and guards. [`local_forms`] instantiates them for one node; the
//! e-graph rewrites ([`super::egraph`]) turn each instance into an e-node.
//! `R` = replicated, `S(a)` = split on axis a, `P` = partial sum, `N` = number of devices.
pub(crate) mod attention;
pub mod dsl;
mod gather_index;
mod kv_block;
mod matmul;
mod movement;

use super::form::{operand_local_shape, LocalForm, Lowering, Operand};
use crate::cost::op_flops;
use tessera_ir::spec::Partitioning;
use tessera_ir::{Graph, Layout, NodeId, Op, TensorId};

/// What a rule instance gives before validation: operands, output layout, lowering.
pub(crate) type Sig = (Vec<Operand>, Layout, Lowering);

/// The seed's form of output `out` of `node`: everything replicated.
pub fn seed_forms(cx: &RuleCx, node: NodeId, out: usize) -> Vec<LocalForm> {
    checked_forms(
        cx,
        node,
        out,
        std::iter::once(("replicated", replicated(cx, node, out))),
    )
}

/// The rules in force: the built-in table, then a user's (see [`RuleCx::user_rules`]).
pub fn all_rules(user: &[dsl::DistRule]) -> impl Iterator<Item = &dsl::DistRule> {
    dsl::table().iter().chain(user)
}

/// The forms the rules named `name` give output `out` of `node` (checked and costed, seed
/// excluded): what the runner's rewrite of that name adds.
pub fn forms_of_rule(cx: &RuleCx, name: &str, node: NodeId, out: usize) -> Vec<LocalForm> {
    if cx.n == 1 {
        return vec![];
    }
    let by_rule = all_rules(&cx.user_rules)
        .filter(|r| r.name == name)
        .map(|r| (r.name(), dsl::instantiate(r, cx, node, out)));
    checked_forms(cx, node, out, by_rule)
}

/// Whether any rule named `name` can apply to `node`'s op (its lhs head names the op's class,
/// or it is a built-in generator): the runner's search.
pub fn rule_may_match(user: &[dsl::DistRule], name: &str, node: &tessera_ir::Node) -> bool {
    all_rules(user).any(|r| r.name == name && dsl::may_match(r, &node.op))
}

/// The names of the distribution rules, in table order (a user's after the built-in ones),
/// each once (the seed `replicated` first).
pub fn rule_names_with(user: &[dsl::DistRule]) -> Vec<&'static str> {
    let mut names = vec!["replicated"];
    for r in all_rules(user) {
        if !names.contains(&r.name()) {
            names.push(r.name());
        }
    }
    names
}

/// The names of the built-in distribution rules (see [`rule_names_with`]).
pub fn rule_names() -> Vec<&'static str> {
    rule_names_with(&[])
}

/// Context of rule instantiation.
#[derive(Clone)]
pub struct RuleCx<'a> {
    /// The graph.
    pub g: &'a Graph,
    /// Devices.
    pub n: usize,
    /// Producer of each tensor.
    pub producers: std::sync::Arc<Vec<Option<NodeId>>>,
    /// Limits of the extractions run in this context.
    pub limits: crate::partition::extract::ExtractLimits,
    /// The graph, shared with the e-graph analyses whose rewrites instantiate the rules
    /// while the runner runs.
    pub shared: std::sync::Arc<Graph>,
    /// A user's distribution rules (`tessera compile --dist-rules FILE`), applied after the
    /// built-in table.
    pub user_rules: std::sync::Arc<Vec<dsl::DistRule>>,
    /// The grain of each axis extent, for ragged splits.
    pub grains: std::sync::Arc<crate::partition::ragged::Grains>,
}

impl<'a> RuleCx<'a> {
    /// A context for `g` on `n` devices.
    pub fn new(g: &'a Graph, n: usize) -> Self {
        RuleCx {
            g,
            n,
            producers: std::sync::Arc::new(g.producers()),
            limits: Default::default(),
            shared: std::sync::Arc::new(g.clone()),
            user_rules: Default::default(),
            grains: std::sync::Arc::new(crate::partition::ragged::Grains::of(g)),
        }
    }
    pub(crate) fn shape(&self, t: TensorId) -> &[usize] {
        &self.g.tensor(t).shape
    }
    pub(crate) fn is_weight(&self, t: TensorId) -> bool {
        self.g.weights.contains_key(&t)
    }
}

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

/// All valid local forms of output `out` of `node` on `cx.n` devices: the replicated seed,
/// then every rule of the table ([`dsl::table`]) in order. With one device only the
/// replicated form exists.
pub fn local_forms(cx: &RuleCx, node: NodeId, out: usize) -> Vec<LocalForm> {
    let seed = std::iter::once(("replicated", replicated(cx, node, out)));
    let table = dsl::table()
        .iter()
        .filter(|_| cx.n > 1)
        .map(|r| (r.name(), dsl::instantiate(r, cx, node, out)));
    checked_forms(cx, node, out, seed.chain(table))
}

/// Checks and costs the signatures each rule gave: every layout must divide its tensor, no
/// integer tensor may be partial; duplicates are dropped.
fn checked_forms(
    cx: &RuleCx,
    node: NodeId,
    out: usize,
    by_rule: impl Iterator<Item = (&'static str, Vec<Sig>)>,
) -> Vec<LocalForm> {
    let nd = cx.g.node(node);
    let tensor = nd.outputs[out];
    let mut forms: Vec<LocalForm> = Vec::new();
    for (rule_name, sigs) in by_rule {
        // A user's rules are theirs: only the built-in table must agree with the op specs.
        // `kv-block` re-instantiates the other rules: the op's own rules answer for it.
        let builtin = rule_name == "replicated"
            || (rule_name != "kv-block" && dsl::table().iter().any(|r| r.name == rule_name));
        debug_assert!(
            sigs.is_empty() || !builtin || declares(&nd.op, rule_name),
            "rule '{}' fired on {} '{}', but the op's spec (tessera_ir::spec) does not name it",
            rule_name,
            nd.op.name(),
            nd.name
        );
        for (inputs, out_layout, lowering) in sigs {
            let Some(out_shape) = cx.grains.local(out_layout, cx.shape(tensor), cx.n) else {
                continue;
            };
            if out_layout == Layout::Partial && !is_float(cx.g, tensor) {
                continue;
            }
            let mut shapes = Vec::with_capacity(inputs.len());
            let mut ok = true;
            for o in &inputs {
                let partial_int = matches!(o, Operand::Tensor { t, layout: Layout::Partial } if !is_float(cx.g, *t));
                match operand_local_shape(cx.g, &cx.grains, o, cx.n) {
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
                Lowering::KvHeadSlice => {
                    // Each rank reads one key/value head of the replicated K and V.
                    let mut local = shapes.clone();
                    if let (Op::Attention(a), Some(q), Some(k)) =
                        (&nd.op, shapes.first(), shapes.get(1))
                    {
                        if let Some((axis, _, hkv)) = attention::gqa_dims(a, q, k) {
                            for s in local.iter_mut().skip(1).take(2) {
                                if let Some(d) = s.get_mut(axis) {
                                    *d /= hkv.max(1);
                                }
                            }
                        }
                    }
                    let ins: Vec<&[usize]> = local.iter().map(|s| s.as_slice()).collect();
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
                rule: rule_name,
                node,
                out_index: out,
                tensor,
                inputs,
                out: out_layout,
                flops,
                lowering,
            };
            if !crate::partition::ragged::consistent(cx.g, &cx.grains, cx.n, &form) {
                continue;
            }
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
