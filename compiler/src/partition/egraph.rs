//! The layered e-graph of distributed programs.
//!
//! Every e-class is one of
//! * `Prod(t, L)`: tensor `t` *produced* in layout `L` — e-nodes are the local forms of the
//!   rule table that compute it (or a leaf: weight load, graph input, segment boundary);
//! * `Avail(t, L)`: `t` *available* in layout `L` — e-nodes are conversions: `Use` of
//!   `Prod(t, L)`, a collective from some `Prod(t, L')`, or a free local slice / scale of
//!   `Avail(t, R)`;
//! * `View(w, section, L)`: a section of a weight (fused-projection rewrite), a leaf.
//!
//! Compute e-nodes read only `Avail` classes of their inputs (earlier tensors); `Avail`
//! classes read only `Prod` classes of the same tensor or `Avail(t, R)`, which itself reads
//! only `Prod` classes. So the e-graph is acyclic by construction and the extraction needs
//! no cycle constraints. Two classes are only ever merged when they have the same key.
//!
//! The seed term is the all-replicated program; one egg rewrite per row of the rule table
//! adds the row's local forms to the `Prod` classes, and a conversion rewrite wires every
//! `Prod(t, L')` to every `Avail(t, L)` by the cheapest direct collective.
use super::form::{LocalForm, Operand};
use egg::{
    Analysis, Applier, DidMerge, EGraph, Id, Language, PatternAst, SearchMatches, Searcher, Subst,
    Symbol, Var,
};
use std::collections::BTreeMap;
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{Layout, TensorId};

/// The key of an e-class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// Produced in a layout.
    Prod(TensorId, Layout),
    /// Available in a layout.
    Avail(TensorId, Layout),
    /// A weight section in a layout.
    View(TensorId, (usize, usize, usize), Layout),
}

/// A layout conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Conv {
    /// No-op: the produced value is used as is.
    Use,
    /// A collective.
    Collective(CollectiveKind),
    /// Replicated → Split, free.
    LocalSlice,
    /// Replicated → Partial (x/N on every rank).
    Scale,
    /// Key/value block → Split along the same axis, free: each rank's chunk lies inside
    /// the block it holds ([`Layout::Block`]).
    BlockSlice,
}

/// An e-node of the distributed-program language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DistNode {
    /// A weight loaded in a layout (leaf of `Prod(w, L)`).
    Load(TensorId, Layout),
    /// A weight section loaded in a layout (leaf of `View`).
    LoadView(TensorId, (usize, usize, usize), Layout),
    /// A graph input bound replicated (leaf of `Prod(t, R)`).
    Input(TensorId),
    /// A tensor produced outside the segment in a layout (leaf).
    Boundary(TensorId, Layout),
    /// Local form `form` (index into the segment's form list) over its operand classes.
    Compute(u32, Vec<Id>),
    /// Conversion of `t` to a layout, from one class.
    Convert(TensorId, Conv, Layout, [Id; 1]),
}

impl Language for DistNode {
    type Discriminant = DistNode;
    fn discriminant(&self) -> DistNode {
        let mut d = self.clone();
        d.update_children(|_| Id::from(0usize));
        d
    }
    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }
    fn children(&self) -> &[Id] {
        match self {
            DistNode::Compute(_, c) => c,
            DistNode::Convert(_, _, _, c) => c,
            _ => &[],
        }
    }
    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            DistNode::Compute(_, c) => c,
            DistNode::Convert(_, _, _, c) => c,
            _ => &mut [],
        }
    }
}

/// Where a tensor read by the segment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Computed inside the segment.
    Computed,
    /// A weight.
    Weight,
    /// A graph input.
    Input,
    /// Produced before the segment, in this layout.
    Boundary(Layout),
}

/// The graph a segment's rewrites instantiate rules over (shared, so that rewrites, which
/// the runner keeps for its whole run, may hold it).
#[derive(Clone)]
pub struct RuleSource {
    /// The graph.
    pub graph: std::sync::Arc<tessera_ir::Graph>,
    /// Producer of each tensor.
    pub producers: std::sync::Arc<Vec<Option<tessera_ir::NodeId>>>,
    /// Devices.
    pub n: usize,
    /// The grain of each axis extent, for ragged splits.
    pub grains: std::sync::Arc<super::ragged::Grains>,
    /// Tensors computed inside the segment.
    pub computed: std::collections::BTreeSet<TensorId>,
    /// A user's distribution rules.
    pub user_rules: std::sync::Arc<Vec<super::rules::dsl::DistRule>>,
}

/// Analysis: class keys, plus the segment's forms and the key → class map.
pub struct DistAnalysis {
    /// All local forms of the segment made so far (the seed's, then what the rules' rewrites
    /// instantiate while the runner runs).
    pub forms: Vec<LocalForm>,
    /// Forms by tensor.
    pub forms_of: BTreeMap<TensorId, Vec<u32>>,
    /// What the rules' rewrites need to instantiate rules: the graph, its producers, N.
    pub rule_source: Option<RuleSource>,
    /// (rule name, tensor) pairs already instantiated.
    pub applied: std::collections::BTreeSet<(&'static str, TensorId)>,
    /// Source of every tensor the segment touches.
    pub sources: BTreeMap<TensorId, Source>,
    /// Weight layouts that are valid (divisible), per weight.
    pub weight_layouts: BTreeMap<TensorId, Vec<Layout>>,
    /// Class of each key.
    pub classes: BTreeMap<Key, Id>,
}

impl Analysis<DistNode> for DistAnalysis {
    type Data = Key;
    fn make(egraph: &mut EGraph<DistNode, Self>, enode: &DistNode) -> Key {
        match enode {
            DistNode::Load(t, l) => Key::Prod(*t, *l),
            DistNode::LoadView(t, s, l) => Key::View(*t, *s, *l),
            DistNode::Input(t) => Key::Prod(*t, Layout::Replicated),
            DistNode::Boundary(t, l) => Key::Prod(*t, *l),
            DistNode::Compute(f, _) => {
                let f = &egraph.analysis.forms[*f as usize];
                Key::Prod(f.tensor, f.out)
            }
            DistNode::Convert(t, _, l, _) => Key::Avail(*t, *l),
        }
    }
    fn merge(&mut self, a: &mut Key, b: Key) -> DidMerge {
        // Only classes of equal keys are ever merged (see the module docs).
        debug_assert_eq!(*a, b);
        DidMerge(false, false)
    }
}

/// The e-graph type.
pub type DistEGraph = EGraph<DistNode, DistAnalysis>;

/// Adds `node` to the class of `key`, creating the class when new. Returns the class.
fn add_to(eg: &mut DistEGraph, key: Key, node: DistNode) -> Id {
    let id = eg.add(node);
    match eg.analysis.classes.get(&key).copied() {
        Some(c) => {
            eg.union(c, id);
            eg.find(c)
        }
        None => {
            eg.analysis.classes.insert(key, id);
            id
        }
    }
}

/// Direct conversion from a produced layout to a wanted one, if one exists.
pub fn direct_conversion(from: Layout, to: Layout) -> Option<Conv> {
    use Layout::*;
    match (from, to) {
        (a, b) if a == b => Some(Conv::Use),
        (Partial, Replicated) => Some(Conv::Collective(CollectiveKind::AllReduce)),
        (Split(_), Replicated) => Some(Conv::Collective(CollectiveKind::AllGather)),
        (Partial, Split(_)) => Some(Conv::Collective(CollectiveKind::ReduceScatter)),
        (Split(_), Split(_)) => Some(Conv::Collective(CollectiveKind::AllToAll)),
        (Block(a), Split(b)) if a == b => Some(Conv::BlockSlice),
        _ => None,
    }
}

/// [`direct_conversion`] of tensor `t`, where a block slice also needs every rank's chunk
/// inside its block.
fn conversion_of(eg: &DistEGraph, t: TensorId, from: Layout, to: Layout) -> Option<Conv> {
    let conv = direct_conversion(from, to)?;
    if conv == Conv::BlockSlice {
        let src = eg.analysis.rule_source.as_ref()?;
        let Layout::Block(a) = from else {
            return None;
        };
        let extent = *src.graph.tensor(t).shape.get(a)?;
        if !src.grains.block_holds_split(extent, src.n) {
            return None;
        }
    }
    Some(conv)
}

/// The class `Prod(t, L)` for a leaf source, created on demand.
fn ensure_leaf(eg: &mut DistEGraph, t: TensorId, l: Layout) -> Option<Id> {
    if let Some(c) = eg.analysis.classes.get(&Key::Prod(t, l)) {
        return Some(eg.find(*c));
    }
    let node = match eg.analysis.sources.get(&t)? {
        Source::Weight if eg.analysis.weight_layouts.get(&t)?.contains(&l) => DistNode::Load(t, l),
        Source::Input if l == Layout::Replicated => DistNode::Input(t),
        _ => return None,
    };
    Some(add_to(eg, Key::Prod(t, l), node))
}

/// The class `Avail(t, L)`, created (by some valid route) when new.
pub fn ensure_avail(eg: &mut DistEGraph, t: TensorId, l: Layout) -> Id {
    if let Some(c) = eg.analysis.classes.get(&Key::Avail(t, l)) {
        return eg.find(*c);
    }
    // Direct from a produced class (a weight can be loaded straight in l).
    let direct = ensure_leaf(eg, t, l).is_some();
    if ensure_leaf(eg, t, Layout::Replicated).is_none() && !direct {
        // A weight fixed to another layout (segment::SegmentSpec::fixed_weights) is
        // converted from that one.
        let fixed = eg
            .analysis
            .weight_layouts
            .get(&t)
            .cloned()
            .unwrap_or_default();
        for wl in fixed {
            ensure_leaf(eg, t, wl);
        }
    }
    let prods: Vec<(Layout, Id)> = eg
        .analysis
        .classes
        .range(Key::Prod(t, Layout::Replicated)..=Key::Prod(t, Layout::Partial))
        .map(|(k, v)| match k {
            Key::Prod(_, pl) => (*pl, *v),
            _ => unreachable!("range over Prod keys of one tensor"),
        })
        .collect();
    if let Some((conv, c)) = prods
        .iter()
        .find_map(|(from, c)| conversion_of(eg, t, *from, l).map(|conv| (conv, *c)))
    {
        return add_to(eg, Key::Avail(t, l), DistNode::Convert(t, conv, l, [c]));
    }
    // Via Avail(t, R): every produced layout reaches R directly. Every source has a
    // produced class (segment::build gives each one a Prod), so recursing for R, which every
    // layout reaches directly, ends after one level.
    debug_assert!(
        l != Layout::Replicated,
        "tensor {t:?} has no produced class to make it available replicated"
    );
    let r = ensure_avail(eg, t, Layout::Replicated);
    let conv = if l == Layout::Partial {
        Conv::Scale
    } else {
        Conv::LocalSlice
    };
    add_to(eg, Key::Avail(t, l), DistNode::Convert(t, conv, l, [r]))
}

/// Adds the e-node of form `f` (its operands' classes created on demand).
pub fn add_form(eg: &mut DistEGraph, f: u32) -> Id {
    let form = eg.analysis.forms[f as usize].clone();
    let children = form
        .inputs
        .iter()
        .map(|o| match o {
            Operand::Tensor { t, layout } => ensure_avail(eg, *t, *layout),
            Operand::View { t, section, layout } => add_to(
                eg,
                Key::View(*t, *section, *layout),
                DistNode::LoadView(*t, *section, *layout),
            ),
        })
        .collect();
    add_to(
        eg,
        Key::Prod(form.tensor, form.out),
        DistNode::Compute(f, children),
    )
}

fn one_match(eclass: Id) -> SearchMatches<'static, DistNode> {
    SearchMatches {
        eclass,
        substs: vec![Subst::with_capacity(0)],
        ast: None,
    }
}

/// The searcher half of a rewrite over whole e-classes: no pattern variables, one match per
/// matched class.
trait ClassSearch {
    /// Whether the rewrite applies to `eclass`.
    fn matches(&self, eg: &DistEGraph, eclass: Id) -> bool;
}

/// The applier half of a rewrite over whole e-classes.
trait ClassApply {
    /// Adds the class's new nodes and returns the ids to report as changed; they are reported
    /// only when the e-graph grew.
    fn add_nodes(&self, eg: &mut DistEGraph, eclass: Id) -> Vec<Id>;
}

/// Implements egg's `Searcher` and `Applier` for a `ClassSearch` / `ClassApply` pair.
macro_rules! class_rewrite {
    ($searcher:ty, $applier:ty) => {
        impl Searcher<DistNode, DistAnalysis> for $searcher {
            fn search_eclass_with_limit(
                &self,
                eg: &DistEGraph,
                eclass: Id,
                limit: usize,
            ) -> Option<SearchMatches<'_, DistNode>> {
                (limit > 0 && self.matches(eg, eclass)).then(|| one_match(eclass))
            }
            fn vars(&self) -> Vec<Var> {
                vec![]
            }
        }

        impl Applier<DistNode, DistAnalysis> for $applier {
            fn apply_one(
                &self,
                eg: &mut DistEGraph,
                eclass: Id,
                _: &Subst,
                _: Option<&PatternAst<DistNode>>,
                _: Symbol,
            ) -> Vec<Id> {
                let before = eg.total_size();
                let changed = self.add_nodes(eg, eclass);
                if eg.total_size() == before {
                    vec![]
                } else {
                    changed
                }
            }
        }
    };
}

/// The node computing `t` in the segment and the output index, when `t` is computed there.
fn producer_of(src: &RuleSource, t: TensorId) -> Option<(tessera_ir::NodeId, usize)> {
    if !src.computed.contains(&t) {
        return None;
    }
    let p = src.producers.get(t.index()).copied().flatten()?;
    let out = src.graph.node(p).outputs.iter().position(|o| *o == t)?;
    Some((p, out))
}

/// Searcher of the rules of one name: classes `Prod(t, R)` of tensors computed in the segment
/// whose op a rule of that name can apply to (its lhs head), not instantiated yet.
pub struct RuleSearcher(pub &'static str);

impl ClassSearch for RuleSearcher {
    fn matches(&self, eg: &DistEGraph, eclass: Id) -> bool {
        let Key::Prod(t, Layout::Replicated) = eg[eclass].data else {
            return false;
        };
        let Some(src) = &eg.analysis.rule_source else {
            return false;
        };
        if eg.analysis.applied.contains(&(self.0, t)) {
            return false;
        }
        producer_of(src, t).is_some_and(|(p, _)| {
            super::rules::rule_may_match(&src.user_rules, self.0, src.graph.node(p))
        })
    }
}

/// Applier of the rules of one name: instantiates them for the matched tensor's node (the
/// table's patterns, [`super::rules::dsl`]) and adds each new local form's e-node; a form
/// another rule already gave is not added twice.
pub struct RuleApplier(pub &'static str);

impl ClassApply for RuleApplier {
    fn add_nodes(&self, eg: &mut DistEGraph, eclass: Id) -> Vec<Id> {
        let Key::Prod(t, _) = eg[eclass].data else {
            return vec![];
        };
        if !eg.analysis.applied.insert((self.0, t)) {
            return vec![];
        }
        let Some(src) = eg.analysis.rule_source.clone() else {
            return vec![];
        };
        let Some((node, out)) = producer_of(&src, t) else {
            return vec![];
        };
        let cx = super::rules::RuleCx {
            g: &src.graph,
            n: src.n,
            producers: src.producers.clone(),
            limits: Default::default(),
            shared: src.graph.clone(),
            user_rules: src.user_rules.clone(),
            grains: src.grains.clone(),
        };
        let mut changed = Vec::new();
        for form in super::rules::forms_of_rule(&cx, self.0, node, out) {
            let known = eg.analysis.forms_of.get(&t).is_some_and(|fs| {
                fs.iter().any(|&f| {
                    let k = &eg.analysis.forms[f as usize];
                    k.inputs == form.inputs && k.out == form.out && k.lowering == form.lowering
                })
            });
            if known {
                continue;
            }
            let f = eg.analysis.forms.len() as u32;
            eg.analysis.forms_of.entry(t).or_default().push(f);
            eg.analysis.forms.push(form);
            changed.push(add_form(eg, f));
        }
        changed
    }
}

class_rewrite!(RuleSearcher, RuleApplier);

/// Searcher of the conversion rewrite: every `Avail` class.
pub struct AvailSearcher;

impl ClassSearch for AvailSearcher {
    fn matches(&self, eg: &DistEGraph, eclass: Id) -> bool {
        matches!(eg[eclass].data, Key::Avail(..))
    }
}

/// Applier of the conversion rewrite: `Avail(t, L)` ⇐ every direct conversion from every
/// `Prod(t, L')`, and ⇐ local slice / scale of `Avail(t, R)`.
pub struct ConvertApplier;

impl ClassApply for ConvertApplier {
    fn add_nodes(&self, eg: &mut DistEGraph, eclass: Id) -> Vec<Id> {
        let Key::Avail(t, l) = eg[eclass].data else {
            return vec![];
        };
        ensure_leaf(eg, t, l);
        let prods: Vec<(Layout, Id)> = eg
            .analysis
            .classes
            .range(Key::Prod(t, Layout::Replicated)..=Key::Prod(t, Layout::Partial))
            .filter_map(|(k, v)| {
                if let Key::Prod(_, pl) = k {
                    Some((*pl, *v))
                } else {
                    None
                }
            })
            .collect();
        for (from, c) in prods {
            if let Some(conv) = conversion_of(eg, t, from, l) {
                add_to(eg, Key::Avail(t, l), DistNode::Convert(t, conv, l, [c]));
            }
        }
        if l != Layout::Replicated {
            let r = ensure_avail(eg, t, Layout::Replicated);
            let conv = if l == Layout::Partial {
                Conv::Scale
            } else {
                Conv::LocalSlice
            };
            add_to(eg, Key::Avail(t, l), DistNode::Convert(t, conv, l, [r]));
        }
        vec![eg.find(eclass)]
    }
}

class_rewrite!(AvailSearcher, ConvertApplier);
