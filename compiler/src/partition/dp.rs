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
use super::dp_bound::{chain_bounds, lower_bound, serve_bound};
use super::dp_front::{insert, truncate, FRONT_CAP};
use super::dp_order::consumers_first;
use super::egraph::Key;
use super::extract::{total_cost, ExtractError, Extraction, Extractor, FlatProblem};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tessera_ir::{Layout, TensorId};

/// The exact frontier-DP extractor.
pub struct DpExtractor {
    /// Only the optimal cost matters, not which of several optimal programs is returned
    /// (see [`run`]).
    pub value_only: bool,
}

/// One link of the persistent choice lists: (class, node) chosen after `parent`.
#[derive(Clone, Copy)]
struct Link {
    parent: u32,
    class: u32,
    node: u32,
}

pub(super) const NO_LINK: u32 = u32::MAX;

/// A partial solution: its cost, parameter bytes and choice list (index into the links).
#[derive(Clone, Copy, Debug)]
pub struct Partial {
    /// Cost so far.
    pub cost: f64,
    /// Parameter bytes so far.
    pub mem: f64,
    pub(super) link: u32,
}

/// A frontier: (tensor << 32 | class) of every open demand, sorted.
type Frontier = Vec<u64>;

/// The tensor of a class key.
pub fn tensor_of(k: &Key) -> TensorId {
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
    pub demands: Vec<u64>,
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

/// The states left after a DP run: frontier (demanded classes of the open tensors) →
/// Pareto front, plus the choice lists.
pub struct DpRun {
    /// Final states: demanded classes (sorted) and their partial solutions.
    pub finals: Vec<(Vec<usize>, Vec<Partial>)>,
    links: Vec<Link>,
    /// The least cost plus lower bound of any state the limits dropped (infinite when the run
    /// was exact): no program through a dropped state costs less.
    pub dropped: f64,
}

/// The best program of a DP run: (total cost, partial, picks serving the open tensor).
pub type Best<'a> = (f64, &'a Partial, Vec<(usize, usize)>);

impl DpRun {
    /// The cheapest program with the open tensor (if any) produced in `l_in` only: the
    /// final states' demands on it served from `Prod(open, l_in)` with no parameter bytes.
    /// Without an open tensor (`l_in` None) only the final state demanding nothing counts.
    pub fn best(&self, p: &FlatProblem, l_in: Option<Layout>) -> Option<Best<'_>> {
        let mut best: Option<Best> = None;
        for (demand, parts) in &self.finals {
            let Some(cheapest) = parts.iter().min_by(|a, b| a.cost.total_cmp(&b.cost)) else {
                continue;
            };
            let served: Vec<(f64, Vec<(usize, usize)>)> = if demand.is_empty() {
                vec![(0.0, vec![])]
            } else if let Some(l_in) = l_in {
                outcomes(p, demand)
                    .into_iter()
                    .filter(|o| {
                        o.picks.iter().all(|&(c, _)| match p.classes[c].key {
                            Key::Prod(_, l) => l == l_in,
                            _ => true,
                        }) && o.mem == 0.0
                    })
                    .map(|o| (o.cost, o.picks))
                    .collect()
            } else {
                vec![]
            };
            for (c, picks) in served {
                let total = cheapest.cost + c;
                if best.as_ref().is_none_or(|b| total < b.0) {
                    best = Some((total, cheapest, picks));
                }
            }
        }
        best
    }

    /// A proven lower bound on the optimum whose best found program costs `best` (None:
    /// none found): `best` itself when the run was exact.
    pub fn lower(&self, best: Option<f64>) -> f64 {
        best.unwrap_or(f64::INFINITY).min(self.dropped)
    }

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
        let i = self.slot(fr);
        &mut self.list[i].1
    }

    /// The index of the state of frontier `fr` (added empty when new).
    fn slot(&mut self, fr: Frontier) -> usize {
        match self.index.get(&fr) {
            Some(&i) => i,
            None => {
                self.index.insert(fr.clone(), self.list.len());
                self.list.push((fr, Vec::new()));
                self.list.len() - 1
            }
        }
    }
}

/// States kept per step by the heuristic pass that finds the upper bound.
const BEAM: usize = 64;

/// States kept per step once the deadline has passed: a run that starts late skips the
/// heuristic pass and keeps this many (a 5,000-class piece of a hybrid CNN/attention model
/// took 2.4 s late at [`BEAM`] with both passes, 0.3 s at this width with one).
const LATE_WIDTH: usize = 8;

/// Relative slack on the bound test, so that sums taken in another order never prune a
/// state whose cost equals the bound.
const BOUND_SLACK: f64 = 1e-9;

/// Runs the frontier DP, deciding every tensor except the open one (`open`: the tensor and
/// the layouts it may be produced in); returns the final states (which demand only classes
/// of the open tensor).
///
/// Branch and bound, exact: a first pass keeps only the [`BEAM`] most promising states
/// per step and yields feasible programs, whose costs (one per open layout) are upper
/// bounds `ub_l` on the optima asked for. The exact pass then drops a partial solution
/// when its cost plus a lower bound on any completion exceeds every `ub_l` (the open
/// tensor's serving bounded per layout). The lower bound ([`lower_bound`]) counts, over the
/// open tensors, the cheapest way to serve their current demands with their own classes
/// (and a chain bound of what that serving demands upstream, never counting a shared
/// class twice): classes belong to one tensor and are paid once, later demands only
/// grow a tensor's demand set (serving a superset restricts to a serving of the subset, at
/// no greater cost) and costs are non-negative. A dropped partial therefore only leads to
/// programs dearer than `ub`, never to an optimum, and every partial it could have
/// dominated is no better, so the optima found are those of the full DP.
///
/// With `value_only` (only the optimal costs are wanted, as for `lower_bound_bytes`) the
/// exact pass also drops partials that can at best tie with the bound, and the beam's
/// programs join the final states: the best found is then optimal, but among equally cheap
/// programs it may be another one than the full DP's.
///
/// Limits ([`super::extract::ExtractLimits`]): when a step leaves more states than the state
/// budget (or any state once the deadline has passed, then down to the beam width), the
/// exact pass keeps the most promising ones (least cost plus lower bound) and records the
/// least cost plus lower bound it dropped ([`DpRun::dropped`]); the beam's programs join the
/// final states, and the result is the best program found with a proven lower bound. A run
/// that starts past the deadline is that narrowed exact pass alone (no bounds to prune with,
/// [`LATE_WIDTH`] states per step): its lower bound comes from the states it dropped.
pub fn run(
    p: &FlatProblem,
    open: Option<(TensorId, &[Layout])>,
    value_only: bool,
) -> Result<DpRun, ExtractError> {
    let t0 = std::time::Instant::now();
    if p.limits.deadline.is_some_and(|d| t0 > d) {
        let r = run_pass(p, open, None, &[], value_only);
        if std::env::var_os("TESSERA_DP_TRACE").is_some() {
            eprintln!("dp late {:?} classes {}", t0.elapsed(), p.classes.len());
        }
        return r;
    }
    let ls: Vec<Option<Layout>> = match open {
        Some((_, ls)) => ls.iter().map(|l| Some(*l)).collect(),
        None => vec![None],
    };
    let beam = run_pass(p, open, Some(BEAM), &[], false);
    let bounds: Vec<(Option<Layout>, f64)> = match &beam {
        Ok(beam) => ls
            .into_iter()
            .map(|l| (l, beam.best(p, l).map_or(f64::INFINITY, |b| b.0)))
            .collect(),
        Err(_) => vec![],
    };
    if std::env::var_os("TESSERA_DP_TRACE").is_some() {
        eprintln!("dp upper bounds {bounds:?} beam {:?}", t0.elapsed());
    }
    let t1 = std::time::Instant::now();
    let r = run_pass(p, open, None, &bounds, value_only);
    if std::env::var_os("TESSERA_DP_TRACE").is_some() {
        eprintln!("dp exact {:?} classes {}", t1.elapsed(), p.classes.len());
    }
    match (value_only, r, beam) {
        (_, Ok(mut exact), Ok(beam)) if value_only || exact.dropped.is_finite() => {
            let shift = |l: u32| {
                if l == NO_LINK {
                    l
                } else {
                    l + exact.links.len() as u32
                }
            };
            let links: Vec<Link> = beam
                .links
                .iter()
                .map(|l| Link {
                    parent: shift(l.parent),
                    ..*l
                })
                .collect();
            for (fr, parts) in beam.finals {
                let parts = parts
                    .into_iter()
                    .map(|x| Partial {
                        link: shift(x.link),
                        ..x
                    })
                    .collect();
                exact.finals.push((fr, parts));
            }
            exact.links.extend(links);
            Ok(exact)
        }
        // Everything pruned: nothing beats the beam's programs.
        (true, Err(_), Ok(beam)) => Ok(beam),
        (_, r, _) => r,
    }
}

/// One pass of the DP: exact when `beam` is None, dropping only partials that cannot reach
/// a program within any of `bounds` ((open layout, upper bound on its optimum); no bounds:
/// no pruning), else keeping the `beam` states of least cost plus lower bound.
fn run_pass(
    p: &FlatProblem,
    open: Option<(TensorId, &[Layout])>,
    beam: Option<usize>,
    bounds: &[(Option<Layout>, f64)],
    value_only: bool,
) -> Result<DpRun, ExtractError> {
    // Value only: drop what can at best tie with a bound (within rounding: at most half a
    // byte, as bytes objectives sum whole bytes).
    let slack_of = |ub: f64| {
        if value_only {
            -(ub.abs() * BOUND_SLACK).min(0.5)
        } else {
            ub.abs() * BOUND_SLACK
        }
    };
    let over = |x: f64, limit: f64| if value_only { x >= limit } else { x > limit };
    let open_t = open.map(|(t, _)| t.0 as u64);
    let open: BTreeSet<TensorId> = open.map(|(t, _)| t).into_iter().collect();
    let bounded = !bounds.is_empty() && bounds.iter().all(|b| b.1.is_finite());
    let mut serve: FxHashMap<Vec<usize>, f64> = FxHashMap::default();
    // The largest cost-plus-lower-bound (open tensor left out) that can still reach a
    // program within one of the bounds, given the open tensor's demand.
    let mut limit_of = |fr: &[u64]| -> f64 {
        let Some(t) = open_t else {
            return bounds[0].1 + slack_of(bounds[0].1);
        };
        let lo = fr.partition_point(|e| (e >> 32) < t);
        let hi = fr.partition_point(|e| (e >> 32) <= t);
        let demand: Vec<usize> = fr[lo..hi]
            .iter()
            .map(|e| (e & 0xffff_ffff) as usize)
            .collect();
        if let Some(&v) = serve.get(&demand) {
            return v;
        }
        let v = bounds
            .iter()
            .map(|&(l, ub)| ub + slack_of(ub) - serve_bound(p, &demand, l))
            .fold(f64::NEG_INFINITY, f64::max);
        serve.insert(demand, v);
        v
    };
    let mut mins: FxHashMap<Vec<usize>, (f64, f64)> = FxHashMap::default();
    let h = chain_bounds(p, open_t);
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
    let mut dropped = f64::INFINITY;
    let past_deadline = || {
        p.limits
            .deadline
            .is_some_and(|d| std::time::Instant::now() > d)
    };
    // A pass that began before the deadline narrows to the beam's width when it passes it;
    // one that began after, to LATE_WIDTH.
    let late_width = if past_deadline() { LATE_WIDTH } else { BEAM };
    for t in order.into_iter().filter(|t| !open.contains(t)) {
        let key = t.0 as u64;
        let mut next = States::default();
        for (done, (fr, parts)) in std::mem::take(&mut states.list).into_iter().enumerate() {
            // Past the deadline the exact pass decides at most the beam's width of states
            // per step; each one left is dropped with its least cost plus lower bound.
            if beam.is_none() && done >= late_width && past_deadline() {
                let least = parts.iter().map(|x| x.cost).fold(f64::INFINITY, f64::min);
                let lb = lower_bound(p, &fr, open_t, &h, &mut cache, &mut mins);
                dropped = dropped.min(least + lb);
                continue;
            }
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
                let (lb, limit) = if bounded {
                    (
                        lower_bound(p, &nf, open_t, &h, &mut cache, &mut mins),
                        limit_of(&nf),
                    )
                } else {
                    (0.0, f64::INFINITY)
                };
                if parts.iter().all(|pt| over(pt.cost + o.cost + lb, limit)) {
                    continue;
                }
                let slot = next.slot(nf);
                for pt in &parts {
                    let e = &mut next.list[slot].1;
                    let mem = pt.mem + o.mem;
                    if mem > budget {
                        continue;
                    }
                    let cost = pt.cost + o.cost;
                    if over(cost + lb, limit) {
                        continue;
                    }
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
                    if e.len() > 2 * FRONT_CAP {
                        let least = truncate(e);
                        if beam.is_none() {
                            let fr = &next.list[slot].0;
                            let lb = lower_bound(p, fr, open_t, &h, &mut cache, &mut mins);
                            dropped = dropped.min(least + lb);
                        }
                    }
                }
            }
        }
        states = next;
        for (fr, parts) in &mut states.list {
            let least = truncate(parts);
            if least.is_finite() && beam.is_none() {
                dropped =
                    dropped.min(least + lower_bound(p, fr, open_t, &h, &mut cache, &mut mins));
            }
        }
        // The beam pass keeps BEAM states; the exact pass keeps all up to the state budget,
        // then the most promising (past the deadline, only BEAM of them).
        let (cap, lb_open) = match beam {
            Some(k) => (k, None),
            None if past_deadline() => (late_width, open_t),
            None => (p.limits.max_states, open_t),
        };
        if states.list.len() > cap {
            let mut keyed: Vec<(f64, usize)> = states
                .list
                .iter()
                .enumerate()
                .map(|(i, (fr, parts))| {
                    let best = parts.iter().map(|x| x.cost).fold(f64::INFINITY, f64::min);
                    (
                        best + lower_bound(p, fr, lb_open, &h, &mut cache, &mut mins),
                        i,
                    )
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if beam.is_none() {
                dropped = keyed[cap..].iter().map(|x| x.0).fold(dropped, f64::min);
            }
            let mut keep: Vec<usize> = keyed[..cap].iter().map(|x| x.1).collect();
            keep.sort_unstable();
            let mut list = std::mem::take(&mut states.list);
            let mut kept = Vec::with_capacity(cap);
            for i in keep.into_iter().rev() {
                kept.push(list.swap_remove(i));
            }
            kept.reverse();
            states.list = kept;
        }
        if trace {
            let partials: usize = states.list.iter().map(|s| s.1.len()).sum();
            eprintln!(
                "dp t={} states={} partials={partials}",
                t.0,
                states.list.len()
            );
        }
        if states.list.is_empty() {
            if dropped.is_finite() {
                // Everything left was pruned by the bounds; the beam's programs remain.
                return Ok(DpRun {
                    finals: vec![],
                    links,
                    dropped,
                });
            }
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
    Ok(DpRun {
        finals,
        links,
        dropped,
    })
}

impl Extractor for DpExtractor {
    fn name(&self) -> &'static str {
        "frontier-dp"
    }
    fn extract(&self, p: &FlatProblem) -> Result<Extraction, ExtractError> {
        let dp = run(p, None, self.value_only)?;
        let (_, best, _) = dp
            .best(p, None)
            .ok_or_else(|| ExtractError::Infeasible(String::new()))?;
        let choice = dp.choice(best);
        let cost = total_cost(p, &choice);
        Ok(Extraction {
            choice,
            cost,
            lower_bound: dp.lower(Some(cost)),
        })
    }
}
