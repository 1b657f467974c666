//! The order in which the frontier DP decides tensors.
use super::dp::tensor_of;
use super::egraph::Key;
use super::extract::FlatProblem;
use std::collections::{BTreeMap, BTreeSet};
use tessera_ir::TensorId;

/// Tensors in an order where each comes after every tensor that reads it (consumers
/// first), chosen greedily to keep the DP frontier narrow: among the tensors whose readers
/// are all decided, take the one whose decision opens the fewest new tensors (closing an
/// open one counts −1), ties to the most recently opened, then the largest id. Any
/// consumers-first order gives the same optimum; the order only changes how many states
/// the DP carries (deciding a tensor right after its last reader keeps its demand set out
/// of the product of the other open tensors').
pub fn consumers_first(p: &FlatProblem) -> Vec<TensorId> {
    let mut readers: BTreeMap<TensorId, BTreeSet<TensorId>> = BTreeMap::new();
    let mut operands: BTreeMap<TensorId, BTreeSet<TensorId>> = BTreeMap::new();
    for c in &p.classes {
        if matches!(c.key, Key::View(..)) {
            continue;
        }
        let u = tensor_of(&c.key);
        readers.entry(u).or_default();
        let ops = operands.entry(u).or_default();
        for n in &c.nodes {
            for &k in &n.children {
                let t = tensor_of(&p.classes[k].key);
                if t != u && !matches!(p.classes[k].key, Key::View(..)) {
                    ops.insert(t);
                }
            }
        }
    }
    for (u, ops) in &operands {
        for t in ops {
            readers.entry(*t).or_default().insert(*u);
        }
    }
    let mut waiting: BTreeMap<TensorId, usize> =
        readers.iter().map(|(t, r)| (*t, r.len())).collect();
    // Open tensors with the step at which they were opened.
    let mut opened: BTreeMap<TensorId, usize> = BTreeMap::new();
    for &r in &p.roots {
        if !matches!(p.classes[r].key, Key::View(..)) {
            opened.entry(tensor_of(&p.classes[r].key)).or_insert(0);
        }
    }
    let mut ready: BTreeSet<TensorId> = waiting
        .iter()
        .filter(|(_, w)| **w == 0)
        .map(|(t, _)| *t)
        .collect();
    let mut order = Vec::with_capacity(waiting.len());
    while !ready.is_empty() {
        let score = |t: &TensorId| {
            let new = operands[t]
                .iter()
                .filter(|o| !opened.contains_key(o))
                .count() as i64;
            let close = i64::from(opened.contains_key(t));
            let at = opened.get(t).copied().unwrap_or(0);
            (new - close, std::cmp::Reverse(at), std::cmp::Reverse(*t))
        };
        let t = *ready
            .iter()
            .min_by_key(|t| score(t))
            .expect("ready is not empty");
        ready.remove(&t);
        order.push(t);
        let step = order.len();
        opened.remove(&t);
        for o in &operands[&t] {
            opened.entry(*o).or_insert(step);
            let w = waiting
                .get_mut(o)
                .expect("every operand has a waiting count");
            *w -= 1;
            if *w == 0 {
                ready.insert(*o);
            }
        }
    }
    order
}
