//! Extraction: choose one e-node per needed e-class, DAG-aware (a shared class is paid once).
//!
//! [`flatten`] turns the reachable part of an e-graph into a [`FlatProblem`]; the exact
//! extractor is the frontier DP (`super::dp::DpExtractor`); [`check`] verifies any extraction.
use super::egraph::{DistEGraph, DistNode, Key};
use egg::{Id, Language};
use std::collections::{BTreeMap, BTreeSet};

/// One e-node of the flattened problem.
#[derive(Debug, Clone)]
pub struct FlatNode {
    /// The e-node.
    pub node: DistNode,
    /// Child classes (indices into [`FlatProblem::classes`]), deduplicated.
    pub children: Vec<usize>,
    /// Cost in model seconds.
    pub cost: f64,
    /// Parameter bytes per rank it holds (weight loads).
    pub mem: f64,
    /// Is it a Compute of an activation (for the one-layout-per-tensor constraint)?
    pub computes: bool,
}

/// One e-class of the flattened problem.
#[derive(Debug, Clone)]
pub struct FlatClass {
    /// Its key.
    pub key: Key,
    /// Its (allowed) e-nodes.
    pub nodes: Vec<FlatNode>,
}

/// The extraction problem: classes reachable from the roots, in a deterministic order
/// where children come before parents.
#[derive(Debug, Clone)]
pub struct FlatProblem {
    /// Classes, children first.
    pub classes: Vec<FlatClass>,
    /// Root classes.
    pub roots: Vec<usize>,
    /// Per-rank parameter budget in bytes.
    pub budget: Option<f64>,
    /// How far the exact extractor may go before it settles for the best program found.
    pub limits: ExtractLimits,
}

/// Limits of the exact extraction: past them the frontier DP keeps only the most promising
/// states (so the result is the best program found, with a computed lower bound and gap).
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// Most DP states kept after any step (a deterministic state budget).
    pub max_states: usize,
    /// Past this instant every DP step keeps only a narrow beam of states.
    pub deadline: Option<std::time::Instant>,
}

/// Default state budget of one DP run: about half a second of extraction on the largest
/// blocks measured (docs/partitioner.md, "Limits").
pub const DEFAULT_MAX_STATES: usize = 2_000;

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_states: DEFAULT_MAX_STATES,
            deadline: None,
        }
    }
}

/// An extraction: the chosen node of each chosen class.
#[derive(Debug, Clone)]
pub struct Extraction {
    /// Class index → node index.
    pub choice: BTreeMap<usize, usize>,
    /// Total cost (each chosen node once).
    pub cost: f64,
    /// Proven lower bound on the optimum.
    pub lower_bound: f64,
}

/// Extraction failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExtractError {
    /// No selection satisfies the constraints (budget, pins).
    #[error("no plan satisfies the constraints{0}")]
    Infeasible(String),
    /// An extraction broke an invariant.
    #[error("invalid extraction: {0}")]
    Invalid(String),
}

/// A strategy choosing e-nodes.
pub trait Extractor {
    /// Name recorded in the search stats.
    fn name(&self) -> &'static str;
    /// Solves `p`.
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError>;
}

/// Flattens the part of `eg` reachable from `roots`, keeping nodes `allow` accepts;
/// classes left without nodes disappear with every node that reads them.
pub fn flatten(
    eg: &DistEGraph,
    roots: &[Id],
    cost: impl Fn(&DistNode) -> (f64, f64),
    allow: impl Fn(&Key, &DistNode) -> bool,
    budget: Option<f64>,
) -> Result<FlatProblem, ExtractError> {
    // Post-order DFS from the roots (acyclic by construction), classes by key order of visit.
    let mut order: Vec<Id> = Vec::new();
    let mut state: BTreeMap<Id, u8> = BTreeMap::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|r| (eg.find(*r), false)).collect();
    while let Some((c, done)) = stack.pop() {
        if done {
            state.insert(c, 2);
            order.push(c);
            continue;
        }
        match state.get(&c) {
            Some(2) => continue,
            Some(_) => {
                return Err(ExtractError::Invalid(format!(
                    "cycle through class {:?}",
                    eg[c].data
                )))
            }
            None => {}
        }
        state.insert(c, 1);
        stack.push((c, true));
        let mut kids: BTreeSet<Id> = BTreeSet::new();
        for n in &eg[c].nodes {
            kids.extend(n.children().iter().map(|k| eg.find(*k)));
        }
        for k in kids.into_iter().rev() {
            if state.get(&k) != Some(&2) {
                stack.push((k, false));
            }
        }
    }
    let mut index: BTreeMap<Id, usize> = BTreeMap::new();
    let mut classes = Vec::new();
    for c in order {
        let key = eg[c].data;
        let mut nodes: Vec<FlatNode> = Vec::new();
        let mut sorted: Vec<&DistNode> = eg[c].nodes.iter().collect();
        sorted.sort();
        for n in sorted {
            if !allow(&key, n) {
                continue;
            }
            let kids: Option<BTreeSet<usize>> = n
                .children()
                .iter()
                .map(|k| index.get(&eg.find(*k)).copied())
                .collect();
            let Some(kids) = kids else { continue };
            let (cst, mem) = cost(n);
            let computes = matches!(n, DistNode::Compute(..));
            nodes.push(FlatNode {
                node: n.clone(),
                children: kids.into_iter().collect(),
                cost: cst,
                mem,
                computes,
            });
        }
        if !nodes.is_empty() {
            index.insert(c, classes.len());
            classes.push(FlatClass { key, nodes });
        }
    }
    let roots = roots
        .iter()
        .map(|r| {
            index.get(&eg.find(*r)).copied().ok_or_else(|| {
                ExtractError::Infeasible(format!(
                    " (nothing can produce {:?})",
                    eg[eg.find(*r)].data
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FlatProblem {
        classes,
        roots,
        budget,
        limits: ExtractLimits::default(),
    })
}

/// Cost of a choice, each chosen node once.
pub fn total_cost(p: &FlatProblem, choice: &BTreeMap<usize, usize>) -> f64 {
    choice
        .iter()
        .map(|(&c, &n)| p.classes[c].nodes[n].cost)
        .sum()
}

/// Checks an extraction: every root chosen, every chosen node's children chosen, no cycle,
/// one produced layout per tensor, the budget.
pub fn check(p: &FlatProblem, x: &Extraction) -> Result<(), ExtractError> {
    let bad = |m: String| Err(ExtractError::Invalid(m));
    for r in &p.roots {
        if !x.choice.contains_key(r) {
            return bad(format!("root {:?} not chosen", p.classes[*r].key));
        }
    }
    let mut seen_tensor = BTreeSet::new();
    let mut mem = 0.0;
    for (&c, &n) in &x.choice {
        let node = &p.classes[c].nodes[n];
        for &k in &node.children {
            if !x.choice.contains_key(&k) {
                return bad(format!(
                    "child {:?} of {:?} not chosen",
                    p.classes[k].key, p.classes[c].key
                ));
            }
            // Classes are ordered children first, so a chosen edge must point backwards.
            if k >= c {
                return bad(format!(
                    "cycle: {:?} reads {:?}",
                    p.classes[c].key, p.classes[k].key
                ));
            }
        }
        if let (Key::Prod(t, _), true) = (p.classes[c].key, node.computes) {
            if !seen_tensor.insert(t) {
                return bad(format!("tensor {} produced in two layouts", t.0));
            }
        }
        mem += node.mem;
    }
    if let Some(b) = p.budget {
        if mem > b + 0.5 {
            return bad(format!("parameter bytes {mem} exceed the budget {b}"));
        }
    }
    Ok(())
}
