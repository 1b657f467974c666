//! Extraction: choose one e-node per needed e-class, DAG-aware (a shared class is paid once).
//!
//! [`IlpExtractor`] is exact: a 0/1 program over e-nodes solved by microlp's
//! branch-and-bound. [`GreedyExtractor`] picks the cheapest tree per class bottom-up (no
//! sharing, no budget); it is only a fallback. [`check`] verifies any extraction.
use super::egraph::{DistEGraph, DistNode, Key};
use egg::{Id, Language};
use microlp::{ComparisonOp, OptimizationDirection, Problem};
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
    /// The solver failed.
    #[error("solver failed: {0}")]
    Solver(String),
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
    })
}

/// Exact extraction by a 0/1 integer program (microlp branch-and-bound).
///
/// Variables: x_n ∈ {0,1} per e-node. Constraints: Σ x over a root class = 1; Σ x over a
/// class ≤ 1; x_n ≤ Σ x over each child class of n; Σ over all Compute nodes of one tensor
/// ≤ 1 (one produced layout per tensor); Σ mem_n·x_n ≤ budget. Objective: Σ cost_n·x_n,
/// so a shared class is paid once.
pub struct IlpExtractor;

/// Objective scale: model seconds → microseconds, to keep the simplex well conditioned.
const SCALE: f64 = 1e6;

impl Extractor for IlpExtractor {
    fn name(&self) -> &'static str {
        "ilp(microlp)"
    }
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError> {
        let mut lp = Problem::new(OptimizationDirection::Minimize);
        let vars: Vec<Vec<microlp::Variable>> = p
            .classes
            .iter()
            .map(|c| {
                c.nodes
                    .iter()
                    .map(|n| lp.add_binary_var(n.cost * SCALE))
                    .collect()
            })
            .collect();
        let class_sum = |c: usize| vars[c].iter().map(|v| (*v, 1.0)).collect::<Vec<_>>();
        for (ci, c) in p.classes.iter().enumerate() {
            if c.nodes.len() > 1 {
                lp.add_constraint(class_sum(ci), ComparisonOp::Le, 1.0);
            }
            for (ni, n) in c.nodes.iter().enumerate() {
                for &k in &n.children {
                    let mut e = vec![(vars[ci][ni], 1.0)];
                    e.extend(vars[k].iter().map(|v| (*v, -1.0)));
                    lp.add_constraint(e, ComparisonOp::Le, 0.0);
                }
            }
        }
        for &r in &p.roots {
            lp.add_constraint(class_sum(r), ComparisonOp::Eq, 1.0);
        }
        let mut per_tensor: BTreeMap<tessera_ir::TensorId, Vec<(microlp::Variable, f64)>> =
            BTreeMap::new();
        for (ci, c) in p.classes.iter().enumerate() {
            if let Key::Prod(t, _) = c.key {
                for (ni, n) in c.nodes.iter().enumerate() {
                    if n.computes {
                        per_tensor.entry(t).or_default().push((vars[ci][ni], 1.0));
                    }
                }
            }
        }
        for e in per_tensor.into_values() {
            if e.len() > 1 {
                lp.add_constraint(e, ComparisonOp::Le, 1.0);
            }
        }
        if let Some(b) = p.budget {
            let mut e = Vec::new();
            for (ci, c) in p.classes.iter().enumerate() {
                for (ni, n) in c.nodes.iter().enumerate() {
                    if n.mem > 0.0 {
                        e.push((vars[ci][ni], n.mem / 1e6));
                    }
                }
            }
            if !e.is_empty() {
                lp.add_constraint(e, ComparisonOp::Le, b / 1e6 + 1e-7);
            }
        }
        let sol = lp.solve().map_err(|e| match e {
            microlp::Error::Infeasible => ExtractError::Infeasible(String::new()),
            other => ExtractError::Solver(other.to_string()),
        })?;
        let mut choice = BTreeMap::new();
        for (ci, vs) in vars.iter().enumerate() {
            for (ni, v) in vs.iter().enumerate() {
                if *sol.var_value(*v) > 0.5 {
                    choice.insert(ci, ni);
                }
            }
        }
        let cost = total_cost(p, &choice);
        Ok(Extraction {
            choice,
            cost,
            lower_bound: cost.min(sol.objective() / SCALE),
        })
    }
}

/// Greedy bottom-up tree extraction: per class the node minimising its cost plus its
/// children's tree costs. Ignores sharing, the budget and the one-layout rule.
pub struct GreedyExtractor;

impl Extractor for GreedyExtractor {
    fn name(&self) -> &'static str {
        "greedy-tree"
    }
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError> {
        let mut best: Vec<(f64, usize)> = Vec::with_capacity(p.classes.len());
        for c in &p.classes {
            let b = c
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        n.cost + n.children.iter().map(|&k| best[k].0).sum::<f64>(),
                        i,
                    )
                })
                .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
            best.push(b);
        }
        let mut choice = BTreeMap::new();
        let mut stack: Vec<usize> = p.roots.clone();
        while let Some(c) = stack.pop() {
            if choice.insert(c, best[c].1).is_none() {
                stack.extend(p.classes[c].nodes[best[c].1].children.iter().copied());
            }
        }
        let cost = total_cost(p, &choice);
        Ok(Extraction {
            choice,
            cost,
            lower_bound: 0.0,
        })
    }
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
