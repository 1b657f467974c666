//! Bounds for the branch and bound of the frontier DP (see [`super::dp::run`]).
use super::dp::{outcomes, tensor_of, Outcome};
use super::egraph::Key;
use super::extract::FlatProblem;
use rustc_hash::FxHashMap;
use std::rc::Rc;
use tessera_ir::Layout;

/// A lower bound on the cost of the cheapest program containing each class, counting one
/// chain of e-nodes down to the leaves (the most expensive child at each node, so shared
/// operands are never counted twice); classes of the open tensor count nothing (their
/// serving is bounded apart, per open layout).
pub fn chain_bounds(p: &FlatProblem, open: Option<u64>) -> Vec<f64> {
    let mut h = vec![0.0; p.classes.len()];
    // Children are flattened before their parents.
    for (c, class) in p.classes.iter().enumerate() {
        if open.is_some_and(|t| tensor_of(&class.key).0 as u64 == t) {
            continue;
        }
        h[c] = class
            .nodes
            .iter()
            .map(|n| n.cost + n.children.iter().map(|&k| h[k]).fold(0.0, f64::max))
            .fold(f64::INFINITY, f64::min);
    }
    h
}

/// Lower bound on the cost of completing a frontier (the open tensor `skip` left out): the
/// larger of the sum, over its tensors, of the cheapest serving of their demands with their
/// own classes, and, for each tensor, of such a serving plus the chain bound of the classes
/// it demands.
pub fn lower_bound(
    p: &FlatProblem,
    fr: &[u64],
    skip: Option<u64>,
    h: &[f64],
    cache: &mut FxHashMap<Vec<usize>, Rc<Vec<Outcome>>>,
    mins: &mut FxHashMap<Vec<usize>, (f64, f64)>,
) -> f64 {
    let (mut own, mut chain) = (0.0, 0.0f64);
    let mut i = 0;
    while i < fr.len() {
        let t = fr[i] >> 32;
        let j = i + fr[i..].partition_point(|e| (e >> 32) == t);
        if skip == Some(t) {
            i = j;
            continue;
        }
        let demand: Vec<usize> = fr[i..j]
            .iter()
            .map(|e| (e & 0xffff_ffff) as usize)
            .collect();
        let (o, c) = match mins.get(&demand) {
            Some(m) => *m,
            None => {
                let outs = cache
                    .entry(demand.clone())
                    .or_insert_with_key(|d| Rc::new(outcomes(p, d)))
                    .clone();
                let o = outs.iter().map(|o| o.cost).fold(f64::INFINITY, f64::min);
                let c = outs
                    .iter()
                    .map(|o| {
                        o.cost
                            + o.demands
                                .iter()
                                .map(|e| h[(e & 0xffff_ffff) as usize])
                                .fold(0.0, f64::max)
                    })
                    .fold(f64::INFINITY, f64::min);
                mins.insert(demand, (o, c));
                (o, c)
            }
        };
        own += o;
        chain = chain.max(c);
        i = j;
    }
    own.max(chain)
}

/// The cheapest serving of the open tensor's `demand` from `Prod(open, l)` alone with no
/// parameter bytes (what [`DpRun::best`](super::dp::DpRun::best) allows), or with anything when `l` is None.
pub fn serve_bound(p: &FlatProblem, demand: &[usize], l: Option<Layout>) -> f64 {
    if demand.is_empty() {
        return 0.0;
    }
    outcomes(p, demand)
        .iter()
        .filter(|o| {
            l.is_none_or(|l_in| {
                o.mem == 0.0
                    && o.picks.iter().all(|&(c, _)| match p.classes[c].key {
                        Key::Prod(_, l) => l == l_in,
                        _ => true,
                    })
            })
        })
        .map(|o| o.cost)
        .fold(f64::INFINITY, f64::min)
}
