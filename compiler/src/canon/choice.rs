//! Extraction: the cheapest spelling of every needed e-class.
//!
//! Cost of an e-node: its own cost (1 per op; composite canonical ops count 1, so they beat
//! their decompositions; `div` 1.9 and `pow` 1.5, so a division by a constant becomes a
//! multiplication by its folded reciprocal while other divisions stay; `identity` 50;
//! leaves 0, folded constants 0.25) plus its distinct children's costs, each divided by the number
//! of source-graph readers of the child: a shared input's cost is amortised over its
//! readers, so the sum approximates the DAG cost (tree costs grow exponentially with depth
//! and would drown local differences) and an input counts the same at any depth. Among
//! equal costs the export's own e-node wins, then the smallest (name, output, children).
//! The amortised cost still depends on how much lies upstream, so a last pass
//! ([`improve_dag`]) switches single classes to other e-nodes where the extracted graph's
//! own DAG cost drops.
use super::analysis::CanonGraph;
use super::lang::{CNode, QWEIGHT, TWEIGHT};
use egg::Id;
use std::collections::{HashMap, HashSet};

fn own_cost(n: &CNode) -> f64 {
    match n {
        CNode::Leaf(_) | CNode::Attr(_) => 0.0,
        CNode::Const(_) => 0.25,
        CNode::Op { sym, .. } => match sym.as_str() {
            QWEIGHT | TWEIGHT => 0.0,
            "identity" => 50.0,
            "div" => 1.9,
            "pow" => 1.5,
            _ => 1.0,
        },
    }
}

fn tie_key(n: &CNode) -> (String, u8, Vec<usize>) {
    match n {
        CNode::Op {
            sym, out, children, ..
        } => (
            sym.to_string(),
            *out,
            children.iter().map(|c| usize::from(*c)).collect(),
        ),
        leaf => (leaf.to_string(), 0, vec![]),
    }
}

/// The canonical classes `n` reads, each once, sorted.
fn distinct_children(eg: &CanonGraph, n: &CNode) -> Vec<Id> {
    use egg::Language;
    let mut kids: Vec<Id> = n.children().iter().map(|c| eg.find(*c)).collect();
    kids.sort_unstable();
    kids.dedup();
    kids
}

/// The chosen e-node of every class. `original` holds the e-nodes of the source graph (among
/// equals, the export's own spelling wins); `uses` how many node inputs read each class in
/// the source graph.
/// E-nodes in `banned` (children canonical) are never chosen.
fn choose(
    eg: &CanonGraph,
    original: &HashSet<CNode>,
    uses: &HashMap<Id, usize>,
    banned: &HashSet<CNode>,
) -> HashMap<Id, CNode> {
    use egg::Language;
    let mut classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
    classes.sort();
    let share = |c: Id| uses.get(&c).copied().unwrap_or(1).max(1) as f64;
    let canonical = |n: &CNode| {
        let mut n = n.clone();
        n.update_children(|c| eg.find(c));
        n
    };
    let node_cost = |n: &CNode, cost: &HashMap<Id, f64>| {
        if !banned.is_empty() && banned.contains(&canonical(n)) {
            return f64::INFINITY;
        }
        // Each distinct child once: `x · x` reads x once, as a DAG pays it (counted twice,
        // a square's choice between `x · x` and `x ^ 2` turned on how deep x is, and the
        // first layer of a model, reading the embedding, got another spelling than the
        // next, so the layers no longer repeated).
        own_cost(n)
            + distinct_children(eg, n)
                .iter()
                .map(|&c| cost.get(&c).copied().unwrap_or(f64::INFINITY) / share(c))
                .sum::<f64>()
    };
    // Bellman-Ford style relaxation to the fixpoint (costs only decrease; ids are roughly
    // topological, so few passes are needed).
    let mut cost: HashMap<Id, f64> = HashMap::new();
    loop {
        let mut changed = false;
        for &c in &classes {
            let best = eg[c]
                .nodes
                .iter()
                .map(|n| node_cost(n, &cost))
                .fold(f64::INFINITY, f64::min);
            if best.is_finite() && cost.get(&c).is_none_or(|old| best < *old - 1e-9) {
                cost.insert(c, best);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let is_original = |n: &CNode| u8::from(!original.contains(&canonical(n)));
    classes
        .iter()
        .filter_map(|&c| {
            let best = eg[c]
                .nodes
                .iter()
                .filter(|n| node_cost(n, &cost).is_finite())
                .min_by(|a, b| {
                    let (ca, cb) = (node_cost(a, &cost), node_cost(b, &cost));
                    let near = (ca - cb).abs() <= 1e-9 * ca.abs().max(1.0);
                    (if near {
                        std::cmp::Ordering::Equal
                    } else {
                        ca.total_cmp(&cb)
                    })
                    .then_with(|| is_original(a).cmp(&is_original(b)))
                    .then_with(|| tie_key(a).cmp(&tie_key(b)))
                })?;
            Some((c, best.clone()))
        })
        .collect()
}

/// Why [`postorder`] failed.
enum Order {
    /// The chosen nodes close a cycle through these classes.
    Cycle(Vec<Id>),
    /// A reachable class has no chosen node.
    Missing,
}

/// Classes reachable from `roots` through chosen nodes, children first. Fails on a cycle.
fn postorder(eg: &CanonGraph, chosen: &HashMap<Id, CNode>, roots: &[Id]) -> Result<Vec<Id>, Order> {
    use egg::Language;
    let mut order = Vec::new();
    let mut state: HashMap<Id, bool> = HashMap::new(); // false: on the stack, true: done
    for &root in roots {
        let mut stack = vec![(eg.find(root), false)];
        while let Some((c, expanded)) = stack.pop() {
            if expanded {
                state.insert(c, true);
                order.push(c);
                continue;
            }
            match state.get(&c) {
                Some(true) => continue,
                // Still open: this visit closes a cycle.
                Some(false) => return Err(Order::Cycle(open_path(&stack, c))),
                None => {}
            }
            state.insert(c, false);
            stack.push((c, true));
            let node = chosen.get(&c).ok_or(Order::Missing)?;
            for ch in node.children() {
                let ch = eg.find(*ch);
                match state.get(&ch) {
                    Some(true) => {}
                    Some(false) => return Err(Order::Cycle(open_path(&stack, ch))),
                    None => stack.push((ch, false)),
                }
            }
        }
    }
    Ok(order)
}

/// The open classes of a DFS stack from `from` to the top: a cycle's classes.
fn open_path(stack: &[(Id, bool)], from: Id) -> Vec<Id> {
    let open: Vec<Id> = stack.iter().filter(|e| e.1).map(|e| e.0).collect();
    let start = open.iter().position(|&c| c == from).unwrap_or(0);
    open[start..].to_vec()
}

/// The chosen nodes and the classes reachable from `roots`, children first, with no cycle:
/// the cheapest choice ([`choose`]), and while it closes a cycle, one chosen node of the
/// cycle banned (a rule-made node before an export's own one) and the choice redone. The
/// amortised cost lets a node cost less than a child, so cycles can be cheapest.
fn acyclic_choice(
    eg: &CanonGraph,
    original: &HashSet<CNode>,
    uses: &HashMap<Id, usize>,
    roots: &[Id],
) -> Result<(HashMap<Id, CNode>, Vec<Id>), String> {
    use egg::Language;
    let mut banned: HashSet<CNode> = HashSet::new();
    // Each round bans one more e-node, so this ends; the bound keeps it fast.
    for _ in 0..256 {
        let chosen = choose(eg, original, uses, &banned);
        match postorder(eg, &chosen, roots) {
            Ok(order) => return Ok((chosen, order)),
            Err(Order::Missing) => return Err("a class has no acyclic spelling".into()),
            Err(Order::Cycle(cycle)) => {
                let canonical = |c: &Id| {
                    let mut n = chosen[c].clone();
                    n.update_children(|x| eg.find(x));
                    n
                };
                let victim = cycle
                    .iter()
                    .find(|c| !original.contains(&canonical(c)))
                    .or_else(|| cycle.iter().find(|c| eg[**c].nodes.len() > 1))
                    .ok_or("the extracted graph has a cycle")?;
                banned.insert(canonical(victim));
            }
        }
    }
    Err("the extracted graph has a cycle (256 e-nodes banned)".into())
}

/// [`acyclic_choice`] with the source graph's reader counts, then again with the reader
/// counts of the graph it extracted (a class the rules made is read by as many chosen nodes
/// as it really is; a source class that lost readers no longer looks shared), kept while
/// the extracted graph's own cost (the sum of its nodes' own costs) drops, at most 3 times.
pub(super) fn refined_choice(
    eg: &CanonGraph,
    original: &HashSet<CNode>,
    mut uses: HashMap<Id, usize>,
    roots: &[Id],
) -> Result<(HashMap<Id, CNode>, Vec<Id>), String> {
    use egg::Language;
    let mut best = acyclic_choice(eg, original, &uses, roots)?;
    let mut cost = dag_cost(&best.0, &best.1);
    for _ in 0..3 {
        let (chosen, order) = &best;
        let mut readers: HashMap<Id, usize> = HashMap::new();
        for c in order {
            for ch in chosen[c].children() {
                *readers.entry(eg.find(*ch)).or_insert(0) += 1;
            }
        }
        for c in order {
            uses.insert(*c, readers.get(c).copied().unwrap_or(1));
        }
        let next = acyclic_choice(eg, original, &uses, roots)?;
        let next_cost = dag_cost(&next.0, &next.1);
        if next_cost >= cost - 1e-9 {
            break;
        }
        (best, cost) = (next, next_cost);
    }
    Ok(improve_dag(eg, best, roots))
}

/// Own cost of the graph the chosen nodes spell: each reachable class once.
fn dag_cost(chosen: &HashMap<Id, CNode>, order: &[Id]) -> f64 {
    order.iter().map(|c| own_cost(&chosen[c])).sum()
}

/// Most passes of [`improve_dag`] (each pass that changes something recomputes the order).
const DAG_PASSES: usize = 4;

/// Switches one class at a time to another of its e-nodes whose children are all in the
/// extracted graph already, where that lowers the graph's own DAG cost (classes only the
/// old node read drop out) and keeps it acyclic.
///
/// The amortised cost of [`choose`] charges a child's cost to each reader, so how a class is
/// spelled depends on how much lies upstream. GPT-NeoX's two LayerNorms of one input,
/// written out at opset 14, met in one normalised class: after the embedding each took its
/// own LayerNorm (2 ops), after a layer they shared the normalised value and scaled it with
/// Mul and Add each (5 ops), and the layers no longer repeated. A switch is only tried where
/// it can pay: a cheaper e-node, or other children (commuted operands never are).
fn improve_dag(
    eg: &CanonGraph,
    best: (HashMap<Id, CNode>, Vec<Id>),
    roots: &[Id],
) -> (HashMap<Id, CNode>, Vec<Id>) {
    let (mut chosen, mut order) = best;
    let mut cost = dag_cost(&chosen, &order);
    let kids = |n: &CNode| distinct_children(eg, n);
    for _ in 0..DAG_PASSES {
        let mut changed = false;
        let mut reach: HashSet<Id> = order.iter().copied().collect();
        for c in order.clone() {
            let current = chosen[&c].clone();
            let current_kids = kids(&current);
            for alt in &eg[c].nodes {
                let alt_kids = kids(alt);
                let may_pay = own_cost(alt) < own_cost(&current) || alt_kids != current_kids;
                if alt == &current || !may_pay || !alt_kids.iter().all(|k| reach.contains(k)) {
                    continue;
                }
                chosen.insert(c, alt.clone());
                let trial = postorder(eg, &chosen, roots)
                    .ok()
                    .map(|next| (dag_cost(&chosen, &next), next));
                match trial {
                    Some((next_cost, next)) if next_cost < cost - 1e-9 => {
                        cost = next_cost;
                        reach = next.iter().copied().collect();
                        order = next;
                        changed = true;
                        break;
                    }
                    _ => {
                        chosen.insert(c, current.clone());
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    (chosen, order)
}
