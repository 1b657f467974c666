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
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tessera_ir::TensorId;

/// The exact frontier-DP extractor.
pub struct DpExtractor;

/// One link of the persistent choice lists: (class, node) chosen after `parent`.
#[derive(Clone, Copy)]
struct Link {
    parent: u32,
    class: u32,
    node: u32,
}

const NO_LINK: u32 = u32::MAX;

/// A partial solution: its cost, parameter bytes and choice list (index into the links).
#[derive(Clone, Copy, Debug)]
pub struct Partial {
    /// Cost so far.
    pub cost: f64,
    /// Parameter bytes so far.
    pub mem: f64,
    link: u32,
}

/// A frontier: (tensor << 32 | class) of every open demand, sorted.
type Frontier = Vec<u64>;

fn tensor_of(k: &Key) -> TensorId {
    match k {
        Key::Prod(t, _) | Key::Avail(t, _) | Key::View(t, _, _) => *t,
    }
}

/// One way to serve a tensor's demands.
pub struct Outcome {
    /// Cost of the chosen nodes.
    pub cost: f64,
    /// Parameter bytes of the chosen nodes and of the weight views they read.
    pub mem: f64,
    /// (class, node) picks, views included.
    pub picks: Vec<(usize, usize)>,
    /// Demands pushed on other tensors, as frontier entries.
    demands: Vec<u64>,
}

/// Enumerates the ways to serve `demand` (classes of one tensor).
pub fn outcomes(p: &FlatProblem, demand: &[usize]) -> Vec<Outcome> {
    let mut out = Vec::new();
    let todo: Vec<usize> = demand.to_vec();
    let t = tensor_of(&p.classes[todo[0]].key);
    let mut picks = BTreeMap::new();
    enumerate(p, t, todo, &mut picks, &mut out);
    out
}

fn entry(p: &FlatProblem, k: usize) -> u64 {
    ((tensor_of(&p.classes[k].key).0 as u64) << 32) | k as u64
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
        let mut all: Vec<(usize, usize)> = picks.iter().map(|(a, b)| (*a, *b)).collect();
        for (&c, &n) in picks.iter() {
            let node = &p.classes[c].nodes[n];
            cost += node.cost;
            mem += node.mem;
            for &k in &node.children {
                if let Key::View(..) = p.classes[k].key {
                    // Views are leaves with a single node: pick it now.
                    mem += p.classes[k].nodes[0].mem;
                    all.push((k, 0));
                } else if tensor_of(&p.classes[k].key) != t {
                    demands.push(entry(p, k));
                }
            }
        }
        demands.sort_unstable();
        demands.dedup();
        out.push(Outcome {
            cost,
            mem,
            picks: all,
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

/// The states left after a DP run: frontier (demanded classes of the open tensors) →
/// Pareto front, plus the choice lists.
pub struct DpRun {
    /// Final states: demanded classes (sorted) and their partial solutions.
    pub finals: Vec<(Vec<usize>, Vec<Partial>)>,
    links: Vec<Link>,
}

impl DpRun {
    /// The (class → node) choice of a partial solution.
    pub fn choice(&self, part: &Partial) -> BTreeMap<usize, usize> {
        let mut choice = BTreeMap::new();
        let mut cur = part.link;
        while cur != NO_LINK {
            let l = self.links[cur as usize];
            choice.insert(l.class as usize, l.node as usize);
            cur = l.parent;
        }
        choice
    }
}

/// States of one DP step, in insertion order (deterministic), indexed by frontier.
#[derive(Default)]
struct States {
    list: Vec<(Frontier, Vec<Partial>)>,
    index: FxHashMap<Frontier, usize>,
}

impl States {
    fn front(&mut self, fr: Frontier) -> &mut Vec<Partial> {
        let i = match self.index.get(&fr) {
            Some(&i) => i,
            None => {
                self.index.insert(fr.clone(), self.list.len());
                self.list.push((fr, Vec::new()));
                self.list.len() - 1
            }
        };
        &mut self.list[i].1
    }
}

/// Runs the frontier DP, deciding every tensor except those in `open`; returns the final
/// states (which demand only classes of open tensors).
pub fn run(p: &FlatProblem, open: &BTreeSet<TensorId>) -> Result<DpRun, ExtractError> {
    let order = consumers_first(p);
    let budgeted = p.budget.is_some();
    let budget = p.budget.unwrap_or(f64::INFINITY) + 0.5;
    let mut init: Frontier = p.roots.iter().map(|&r| entry(p, r)).collect();
    init.sort_unstable();
    init.dedup();
    let mut states = States::default();
    states.front(init).push(Partial {
        cost: 0.0,
        mem: 0.0,
        link: NO_LINK,
    });
    let mut links: Vec<Link> = Vec::new();
    let mut cache: FxHashMap<Vec<usize>, Rc<Vec<Outcome>>> = FxHashMap::default();
    let trace = std::env::var_os("TESSERA_DP_TRACE").is_some();
    for t in order.into_iter().filter(|t| !open.contains(t)) {
        let key = t.0 as u64;
        let mut next = States::default();
        for (fr, parts) in std::mem::take(&mut states.list) {
            let lo = fr.partition_point(|e| (e >> 32) < key);
            let hi = fr.partition_point(|e| (e >> 32) <= key);
            if lo == hi {
                let e = next.front(fr);
                for pt in parts {
                    insert(e, pt, budgeted);
                }
                continue;
            }
            let demand: Vec<usize> = fr[lo..hi]
                .iter()
                .map(|e| (e & 0xffff_ffff) as usize)
                .collect();
            let mut rest = fr;
            rest.drain(lo..hi);
            let outs = cache
                .entry(demand)
                .or_insert_with_key(|d| Rc::new(outcomes(p, d)))
                .clone();
            for o in outs.iter() {
                let mut nf = rest.clone();
                if !o.demands.is_empty() {
                    nf.extend_from_slice(&o.demands);
                    nf.sort_unstable();
                    nf.dedup();
                }
                let e = next.front(nf);
                for pt in &parts {
                    let mem = pt.mem + o.mem;
                    if mem > budget {
                        continue;
                    }
                    let cost = pt.cost + o.cost;
                    if e.iter()
                        .any(|f| f.cost <= cost && (!budgeted || f.mem <= mem))
                    {
                        continue;
                    }
                    let mut link = pt.link;
                    for &(c, n) in &o.picks {
                        links.push(Link {
                            parent: link,
                            class: c as u32,
                            node: n as u32,
                        });
                        link = links.len() as u32 - 1;
                    }
                    insert(e, Partial { cost, mem, link }, budgeted);
                }
            }
        }
        states = next;
        if trace {
            let partials: usize = states.list.iter().map(|s| s.1.len()).sum();
            eprintln!(
                "dp t={} states={} partials={partials}",
                t.0,
                states.list.len()
            );
        }
        if states.list.is_empty() {
            return Err(ExtractError::Infeasible(String::new()));
        }
    }
    let finals = states
        .list
        .into_iter()
        .map(|(fr, parts)| {
            let classes = fr.iter().map(|e| (e & 0xffff_ffff) as usize).collect();
            (
                classes,
                parts.into_iter().filter(|x| x.mem <= budget).collect(),
            )
        })
        .collect();
    Ok(DpRun { finals, links })
}

impl Extractor for DpExtractor {
    fn name(&self) -> &'static str {
        "frontier-dp"
    }
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError> {
        let dp = run(p, &BTreeSet::new())?;
        let best = dp
            .finals
            .iter()
            .filter(|(fr, _)| fr.is_empty())
            .flat_map(|(_, f)| f.iter())
            .min_by(|a, b| a.cost.total_cmp(&b.cost))
            .ok_or_else(|| ExtractError::Infeasible(String::new()))?;
        let choice = dp.choice(best);
        let cost = total_cost(p, &choice);
        Ok(Extraction {
            choice,
            cost,
            lower_bound: cost,
        })
    }
}
