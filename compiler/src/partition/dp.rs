//! Exact frontier DP extractor.
//!
//! Tensors are decided consumers-first (reverse topological order of their classes). The
//! DP state is the set of *open* tensors — demanded by an already decided consumer, producer
//! not decided yet — each with the set of its classes demanded so far. Deciding tensor `t`
//! enumerates every way to serve its demanded classes (one e-node per class, classes of `t`
//! reached through `Avail(t, R)` or `Prod(t, L)` paid once, at most one produced layout
//! for a computed tensor), adds the e-node costs and parameter bytes, and adds the chosen
//! nodes' operand classes to the demands of other tensors. States with equal frontiers merge,
//! keeping the Pareto front of (cost, bytes) under the budget (only the cheapest without
//! one). Because every choice is enumerated and only dominated partial solutions are
//! dropped, the result is optimal: it is exact DAG-aware extraction (each class paid once).
use super::egraph::Key;
use super::extract::{total_cost, ExtractError, Extraction, Extractor, FlatProblem};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tessera_ir::TensorId;

/// The exact frontier-DP extractor.
pub struct DpExtractor;

/// Persistent list of (class, node) choices.
struct Chain {
    item: (usize, usize),
    next: Option<Rc<Chain>>,
}

#[derive(Clone)]
struct Partial {
    cost: f64,
    mem: f64,
    chosen: Option<Rc<Chain>>,
}

type Frontier = BTreeMap<TensorId, BTreeSet<usize>>;

fn tensor_of(k: &Key) -> TensorId {
    match k {
        Key::Prod(t, _) | Key::Avail(t, _) | Key::View(t, _, _) => *t,
    }
}

/// One way to serve a tensor's demands.
struct Outcome {
    cost: f64,
    mem: f64,
    picks: Vec<(usize, usize)>,
    demands: Vec<usize>,
}

/// Enumerates the ways to serve `demand` (classes of one tensor).
fn outcomes(p: &FlatProblem, demand: &BTreeSet<usize>) -> Vec<Outcome> {
    let mut out = Vec::new();
    let todo: Vec<usize> = demand.iter().copied().collect();
    let t = tensor_of(&p.classes[todo[0]].key);
    let mut picks = BTreeMap::new();
    enumerate(p, t, todo, &mut picks, &mut out);
    out
}

fn enumerate(
    p: &FlatProblem,
    t: TensorId,
    mut todo: Vec<usize>,
    picks: &mut BTreeMap<usize, usize>,
    out: &mut Vec<Outcome>,
) {
    while let Some(&c) = todo.last() {
        if picks.contains_key(&c) {
            todo.pop();
        } else {
            break;
        }
    }
    let Some(c) = todo.pop() else {
        // Complete: check one produced layout for computed tensors, collect.
        let computes = picks
            .iter()
            .filter(|(&c, &n)| p.classes[c].nodes[n].computes)
            .count();
        if computes > 1 {
            return;
        }
        let (mut cost, mut mem, mut demands) = (0.0, 0.0, Vec::new());
        for (&c, &n) in picks.iter() {
            let node = &p.classes[c].nodes[n];
            cost += node.cost;
            mem += node.mem;
            for &k in &node.children {
                if tensor_of(&p.classes[k].key) != t || matches!(p.classes[k].key, Key::View(..)) {
                    demands.push(k);
                }
            }
        }
        out.push(Outcome {
            cost,
            mem,
            picks: picks.iter().map(|(a, b)| (*a, *b)).collect(),
            demands,
        });
        return;
    };
    for (ni, node) in p.classes[c].nodes.iter().enumerate() {
        picks.insert(c, ni);
        let mut next = todo.clone();
        for &k in &node.children {
            if tensor_of(&p.classes[k].key) == t
                && !matches!(p.classes[k].key, Key::View(..))
                && !picks.contains_key(&k)
            {
                next.push(k);
            }
        }
        enumerate(p, t, next, picks, out);
        picks.remove(&c);
    }
}

/// Tensors in reverse topological order of the "reads" relation between their classes.
fn consumers_first(p: &FlatProblem) -> Vec<TensorId> {
    let mut readers: BTreeMap<TensorId, BTreeSet<TensorId>> = BTreeMap::new();
    let mut indeg: BTreeMap<TensorId, usize> = BTreeMap::new();
    for c in &p.classes {
        if matches!(c.key, Key::View(..)) {
            continue;
        }
        let u = tensor_of(&c.key);
        indeg.entry(u).or_default();
        for n in &c.nodes {
            for &k in &n.children {
                let t = tensor_of(&p.classes[k].key);
                if t != u
                    && !matches!(p.classes[k].key, Key::View(..))
                    && readers.entry(t).or_default().insert(u)
                {
                    *indeg.entry(u).or_default() += 1;
                }
            }
        }
    }
    // Kahn's algorithm, smallest id first for determinism.
    let mut ready: BTreeSet<TensorId> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(t, _)| *t)
        .collect();
    let mut order = Vec::with_capacity(indeg.len());
    while let Some(t) = ready.pop_first() {
        order.push(t);
        for u in readers.get(&t).into_iter().flatten() {
            let d = indeg
                .get_mut(u)
                .expect("every reader has an in-degree entry");
            *d -= 1;
            if *d == 0 {
                ready.insert(*u);
            }
        }
    }
    order.reverse();
    order
}

/// Keeps the Pareto front of (cost, mem); without a budget only the cheapest.
fn insert(front: &mut Vec<Partial>, cand: Partial, budgeted: bool) {
    if !budgeted {
        if front.first().is_none_or(|f| cand.cost < f.cost) {
            *front = vec![cand];
        }
        return;
    }
    if front
        .iter()
        .any(|f| f.cost <= cand.cost && f.mem <= cand.mem)
    {
        return;
    }
    front.retain(|f| !(cand.cost <= f.cost && cand.mem <= f.mem));
    front.push(cand);
}

impl Extractor for DpExtractor {
    fn name(&self) -> &'static str {
        "frontier-dp"
    }
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError> {
        let order = consumers_first(p);
        let budgeted = p.budget.is_some();
        let budget = p.budget.unwrap_or(f64::INFINITY) + 0.5;
        let mut init = Frontier::new();
        for &r in &p.roots {
            init.entry(tensor_of(&p.classes[r].key))
                .or_default()
                .insert(r);
        }
        let mut states: BTreeMap<Frontier, Vec<Partial>> = BTreeMap::new();
        states.insert(
            init,
            vec![Partial {
                cost: 0.0,
                mem: 0.0,
                chosen: None,
            }],
        );
        let mut cache: BTreeMap<BTreeSet<usize>, Rc<Vec<Outcome>>> = BTreeMap::new();
        for t in order {
            let mut next: BTreeMap<Frontier, Vec<Partial>> = BTreeMap::new();
            for (mut fr, parts) in std::mem::take(&mut states) {
                let Some(demand) = fr.remove(&t) else {
                    let e = next.entry(fr).or_default();
                    for pt in parts {
                        insert(e, pt, budgeted);
                    }
                    continue;
                };
                let outs = cache
                    .entry(demand.clone())
                    .or_insert_with(|| Rc::new(outcomes(p, &demand)))
                    .clone();
                for o in outs.iter() {
                    let mut nf = fr.clone();
                    let mut view_mem = 0.0;
                    let mut view_picks = Vec::new();
                    for &k in &o.demands {
                        if let Key::View(..) = p.classes[k].key {
                            // Views are leaves with a single node: pick it now.
                            view_mem += p.classes[k].nodes[0].mem;
                            view_picks.push((k, 0));
                        } else {
                            nf.entry(tensor_of(&p.classes[k].key))
                                .or_default()
                                .insert(k);
                        }
                    }
                    let e = next.entry(nf).or_default();
                    for pt in &parts {
                        let mem = pt.mem + o.mem + view_mem;
                        if mem > budget {
                            continue;
                        }
                        let mut chosen = pt.chosen.clone();
                        for &item in o.picks.iter().chain(&view_picks) {
                            chosen = Some(Rc::new(Chain { item, next: chosen }));
                        }
                        insert(
                            e,
                            Partial {
                                cost: pt.cost + o.cost,
                                mem,
                                chosen,
                            },
                            budgeted,
                        );
                    }
                }
            }
            states = next;
            if states.is_empty() {
                return Err(ExtractError::Infeasible(String::new()));
            }
        }
        let best = states
            .remove(&Frontier::new())
            .and_then(|f| f.into_iter().min_by(|a, b| a.cost.total_cmp(&b.cost)))
            .ok_or_else(|| ExtractError::Infeasible(String::new()))?;
        let mut choice = BTreeMap::new();
        let mut cur = best.chosen;
        while let Some(c) = cur {
            choice.insert(c.item.0, c.item.1);
            cur = c.next.clone();
        }
        let cost = total_cost(p, &choice);
        Ok(Extraction {
            choice,
            cost,
            lower_bound: cost,
        })
    }
}

impl Drop for Chain {
    // Iterative drop: long chains would otherwise recurse once per link.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(rc) = next {
            match Rc::try_unwrap(rc) {
                Ok(mut c) => next = c.next.take(),
                Err(_) => break,
            }
        }
    }
}
