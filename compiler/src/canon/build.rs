//! Rebuilding: the extracted spelling of every needed e-class ([`super::choice`]) as an IR graph.
use super::analysis::{node_op, CanonGraph};
use super::choice::refined_choice;
use super::guards::{zero_point_source, ZeroPointSource};
use super::lang::{has_attr, CNode, QWEIGHT, TWEIGHT};
use egg::Id;
use std::collections::{BTreeMap, HashMap, HashSet};
use tessera_ir::weight::{Quant, Weight, WeightData};
use tessera_ir::{Graph, TensorId, TensorKind};

struct Builder<'a> {
    eg: &'a CanonGraph,
    src: &'a Graph,
    out: Graph,
    names: HashSet<String>,
    node_names: HashSet<String>,
    /// Preferred name of a class (an original tensor in it).
    class_name: HashMap<Id, String>,
    /// Name of the source node that computed a class, when one did.
    node_name: HashMap<Id, String>,
    tensor_of: HashMap<Id, TensorId>,
    /// Output tensors of emitted op groups.
    groups: HashMap<(String, Vec<Id>), Vec<TensorId>>,
    weights: HashMap<u32, TensorId>,
}

/// Takes `preferred` when it is free in `taken`, else the first free of `fallback`,
/// `fallback_1`, `fallback_2`, ...; records the name taken.
fn claim(taken: &mut HashSet<String>, preferred: Option<&String>, fallback: &str) -> String {
    let mut name = match preferred {
        Some(p) if !taken.contains(p) => p.clone(),
        _ => fallback.to_string(),
    };
    let mut k = 1;
    while taken.contains(&name) {
        name = format!("{fallback}_{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

/// What identifies the IR node of an op e-node: outputs of one multi-output op share it.
fn group_key(eg: &CanonGraph, sym: &str, children: &[Id]) -> (String, Vec<Id>) {
    (
        sym.to_string(),
        children.iter().map(|c| eg.find(*c)).collect(),
    )
}

impl Builder<'_> {
    fn fresh(&mut self, base: &str) -> String {
        claim(&mut self.names, None, base)
    }

    fn name_for(&mut self, c: Id, fallback: &str) -> String {
        claim(&mut self.names, self.class_name.get(&c), fallback)
    }

    fn weight(&mut self, t: u32) -> Result<TensorId, String> {
        if let Some(&id) = self.weights.get(&t) {
            return Ok(id);
        }
        let w = self
            .src
            .weights
            .get(&TensorId(t))
            .ok_or("a leaf is neither an input nor a weight")?;
        self.names.insert(w.name.clone());
        let id = self.out.add_weight(w.clone());
        self.weights.insert(t, id);
        Ok(id)
    }

    fn const_weight(&mut self, c: Id, k: u32) -> TensorId {
        let t = self.eg.analysis.interner.consts[k as usize].clone();
        let name = self.name_for(c, &format!("canon_const_{k}"));
        self.out.add_weight(Weight::constant(name, t))
    }

    /// A weight for a scale or zero-point class: a source weight or a constant, given the
    /// weight's rank (leading 1s added).
    fn side_weight(&mut self, c: Id, rank: usize) -> Result<Weight, String> {
        let c = self.eg.find(c);
        let mut w = if let Some(CNode::Leaf(t)) = self.eg[c]
            .nodes
            .iter()
            .find(|n| matches!(n, CNode::Leaf(_)))
        {
            self.src
                .weights
                .get(&TensorId(*t))
                .cloned()
                .ok_or("scale leaf is not a weight")?
        } else {
            let k = self.eg[c]
                .data
                .konst
                .ok_or("scale is neither a weight nor a constant")?;
            let t = self.eg.analysis.interner.consts[k as usize].clone();
            Weight::constant(format!("canon_const_{k}"), t)
        };
        pad_rank(&mut w, rank);
        Ok(w)
    }

    fn qweight(&mut self, c: Id, children: &[Id]) -> Result<TensorId, String> {
        let w = self.qweight_value(c, children)?;
        Ok(self.out.add_weight(w))
    }

    /// The weight of a `(tweight ?perm ?w)` class: ?w (a source weight or a quantised
    /// weight leaf) with its shape permuted and `perm` set (on its scale and zero point too).
    fn tweight(&mut self, c: Id, children: &[Id]) -> Result<TensorId, String> {
        let [p, inner] = children else {
            return Err("tweight takes a perm and a weight".into());
        };
        let perm = match node_op(self.eg, "transpose", std::slice::from_ref(p)) {
            Some(tessera_ir::Op::Transpose(t)) => t.perm,
            _ => return Err("tweight without a Transpose attribute".into()),
        };
        let inner = self.eg.find(*inner);
        let nodes = &self.eg[inner].nodes;
        let mut w = if let Some(CNode::Op { children, .. }) = nodes
            .iter()
            .find(|n| matches!(n, CNode::Op { sym, .. } if sym.as_str() == QWEIGHT))
        {
            let children = children.clone();
            self.qweight_value(inner, &children)?
        } else if let Some(CNode::Leaf(t)) = nodes.iter().find(|n| matches!(n, CNode::Leaf(_))) {
            self.src
                .weights
                .get(&TensorId(*t))
                .cloned()
                .ok_or("transposed leaf is not a weight")?
        } else {
            return Err("tweight of neither a weight nor a quantised weight".into());
        };
        let transpose = |w: &mut Weight| -> Result<(), String> {
            if w.perm.is_some() || perm.len() != w.shape.len() {
                return Err(format!(
                    "weight '{}' cannot be transposed by {perm:?}",
                    w.name
                ));
            }
            w.shape = perm
                .iter()
                .map(|&a| w.shape.get(a).copied().ok_or("perm out of range"))
                .collect::<Result<_, _>>()?;
            w.perm = Some(perm.clone());
            Ok(())
        };
        transpose(&mut w)?;
        if let Some(q) = &mut w.quant {
            transpose(&mut q.scale)?;
            if let Some(z) = &mut q.zero_point {
                transpose(z)?;
            }
        }
        w.name = self.name_for(c, &w.name);
        Ok(self.out.add_weight(w))
    }

    /// The weight of a `qweight` class (not yet added to the graph).
    fn qweight_value(&mut self, c: Id, children: &[Id]) -> Result<Weight, String> {
        let q = match self.eg[self.eg.find(children[0])]
            .nodes
            .iter()
            .find(|n| matches!(n, CNode::Leaf(_)))
        {
            Some(CNode::Leaf(t)) => *t,
            _ => return Err("quantised weight without a stored weight".into()),
        };
        let stored = self
            .src
            .weights
            .get(&TensorId(q))
            .cloned()
            .ok_or("quantised leaf is not a weight")?;
        let rank = stored.shape.len();
        let scale = self.side_weight(children[1], rank)?;
        let zero_point = match children.get(2) {
            // A weight already quantised with scale 1 (unit_qweight) keeps its zero point.
            None => stored.quant.as_ref().and_then(|q| q.zero_point.clone()),
            Some(&z) => {
                let mut w = match zero_point_source(self.eg, self.eg.find(z), stored.dtype) {
                    Some(ZeroPointSource::Weight(t)) => self
                        .src
                        .weights
                        .get(&TensorId(t))
                        .cloned()
                        .ok_or("zero point is not a weight")?,
                    Some(ZeroPointSource::Const(t)) => {
                        Weight::constant(format!("{}_zero_point", stored.name), t)
                    }
                    None => return Err("zero point of an unsupported form".into()),
                };
                pad_rank(&mut w, rank);
                Some(Box::new(w))
            }
        };
        let name = self.name_for(c, &stored.name);
        Ok(Weight {
            name,
            quant: Some(Quant {
                dtype: scale.dtype,
                scale: Box::new(scale),
                zero_point,
            }),
            ..stored
        })
    }

    fn op(
        &mut self,
        c: Id,
        sym: &str,
        out: u8,
        children: &[Id],
        n_out: usize,
    ) -> Result<TensorId, String> {
        let key = group_key(self.eg, sym, children);
        if let Some(outs) = self.groups.get(&key) {
            return outs
                .get(usize::from(out))
                .copied()
                .ok_or_else(|| format!("{sym}: output {out} missing"));
        }
        let op = node_op(self.eg, sym, children).ok_or_else(|| format!("{sym}: no attributes"))?;
        let operands = &children[usize::from(has_attr(&op))..];
        let inputs: Vec<TensorId> = operands
            .iter()
            .map(|ch| {
                self.tensor_of
                    .get(&self.eg.find(*ch))
                    .copied()
                    .ok_or("operand not built")
            })
            .collect::<Result<_, _>>()?;
        let tys: Vec<(tessera_ir::DType, &[usize])> = inputs
            .iter()
            .map(|t| {
                (
                    self.out.tensor(*t).dtype,
                    self.out.tensor(*t).shape.as_slice(),
                )
            })
            .collect();
        let all = tessera_ir::infer::infer(sym, &op, &tys).map_err(|e| e.to_string())?;
        let n = tessera_ir::infer::required_outputs(&op, all.len())
            .max(n_out)
            .min(all.len());
        let base = self.name_for(c, &format!("canon_{sym}"));
        let mut outs = Vec::with_capacity(n);
        for (k, (dtype, shape)) in all.into_iter().take(n).enumerate() {
            let name = if k == usize::from(out) {
                base.clone()
            } else {
                self.fresh(&format!("{base}_out{k}"))
            };
            outs.push(
                self.out
                    .add_tensor(name, dtype, shape, TensorKind::Activation),
            );
        }
        let node_name = claim(
            &mut self.node_names,
            self.node_name.get(&c),
            &format!("{base}_node"),
        );
        self.out.add_node(node_name, op, inputs, outs.clone());
        let t = outs
            .get(usize::from(out))
            .copied()
            .ok_or_else(|| format!("{sym}: output {out} missing"))?;
        self.groups.insert(key, outs);
        Ok(t)
    }
}

/// Reorders a topological order of classes to follow the source graph: a class computed by
/// a source node comes at that node's position, a new class or a repeated computation right
/// after its last operand (so globals such as masks stay where the export put them and
/// repeated computations come before the layers, which layer detection needs).
fn source_order(
    eg: &CanonGraph,
    src: &Graph,
    class: &[Option<Id>],
    chosen: &HashMap<Id, CNode>,
    order: &[Id],
) -> Vec<Id> {
    use egg::Language;
    use std::cmp::Reverse;
    // Source position of each class: its first source node. A class that several source
    // nodes computed as the very same op on the same operands (a computation repeated in
    // the export, e.g. rotary cos/sin in every layer, merged by hash-consing) is placed
    // like a new class instead, right after its operands: it is a global computed once,
    // ahead of the layers that read it. (Classes merged by rewrites, e.g. an Identity's
    // output with its input, keep their first position.)
    let mut computed: HashMap<Id, Vec<(usize, Vec<Id>)>> = HashMap::new();
    for (i, n) in src.nodes.iter().enumerate() {
        let inputs: Vec<Id> = n
            .inputs
            .iter()
            .filter_map(|t| class[t.index()].map(|c| eg.find(c)))
            .collect();
        let outs: HashSet<Id> = n
            .outputs
            .iter()
            .filter_map(|t| class[t.index()].map(|c| eg.find(c)))
            .collect();
        for c in outs {
            computed.entry(c).or_default().push((i, inputs.clone()));
        }
    }
    let repeated = |by: &[(usize, Vec<Id>)]| {
        by.iter().enumerate().any(|(k, (i, ins))| {
            by[k + 1..]
                .iter()
                .any(|(j, other)| other == ins && src.nodes[*j].op == src.nodes[*i].op)
        })
    };
    let mut rank: HashMap<Id, i64> = computed
        .iter()
        .filter(|(_, by)| !repeated(by))
        .map(|(c, by)| (*c, by.iter().map(|(i, _)| *i as i64).min().unwrap_or(-1)))
        .collect();
    let mut readers: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut pending: HashMap<Id, usize> = HashMap::new();
    for &c in order {
        let kids: HashSet<Id> = chosen[&c].children().iter().map(|x| eg.find(*x)).collect();
        if kids.is_empty() {
            // Leaves (inputs, weights, constants, attributes) are ready at once.
            rank.insert(c, -1);
        } else {
            let r = kids
                .iter()
                .map(|k| rank.get(k).copied().unwrap_or(-1))
                .max()
                .unwrap_or(-1);
            rank.entry(c).or_insert(r);
        }
        pending.insert(c, kids.len());
        for k in kids {
            readers.entry(k).or_default().push(c);
        }
    }
    let pos: HashMap<Id, usize> = order.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let mut heap: std::collections::BinaryHeap<Reverse<(i64, usize, Id)>> = order
        .iter()
        .filter(|c| pending[c] == 0)
        .map(|c| Reverse((rank[c], pos[c], *c)))
        .collect();
    let mut out = Vec::with_capacity(order.len());
    while let Some(Reverse((_, _, c))) = heap.pop() {
        out.push(c);
        for r in readers.get(&c).into_iter().flatten() {
            let p = pending.get_mut(r).map(|p| {
                *p -= 1;
                *p
            });
            if p == Some(0) {
                heap.push(Reverse((rank[r], pos[r], *r)));
            }
        }
    }
    out
}

fn pad_rank(w: &mut Weight, rank: usize) {
    while w.shape.len() < rank {
        w.shape.insert(0, 1);
    }
    if let WeightData::Inline { tensor } = &mut w.data {
        tensor.shape = w.shape.clone();
    }
}

/// Rebuilds an IR graph from the cheapest spelling of the classes of `src`'s outputs.
pub fn rebuild(
    eg: &CanonGraph,
    src: &Graph,
    class: &[Option<Id>],
    original: &[CNode],
) -> Result<Graph, String> {
    let original: HashSet<CNode> = original
        .iter()
        .map(|n| {
            let mut n = n.clone();
            egg::Language::update_children(&mut n, |c| eg.find(c));
            n
        })
        .collect();
    let mut uses: HashMap<Id, usize> = HashMap::new();
    for n in &src.nodes {
        for t in &n.inputs {
            if let Some(c) = class[t.index()] {
                *uses.entry(eg.find(c)).or_insert(0) += 1;
            }
        }
    }
    let roots: Vec<Id> = src
        .outputs
        .iter()
        .map(|o| {
            class[o.index()]
                .map(|c| eg.find(c))
                .ok_or("output without a class")
        })
        .collect::<Result<_, _>>()?;
    let (chosen, order) = refined_choice(eg, &original, uses, &roots)?;
    let order = source_order(eg, src, class, &chosen, &order);
    // Class names: graph outputs first, then the lowest original tensor id.
    let mut class_name: HashMap<Id, String> = HashMap::new();
    for o in &src.outputs {
        if let Some(c) = class[o.index()] {
            class_name
                .entry(eg.find(c))
                .or_insert_with(|| src.tensor(*o).name.clone());
        }
    }
    for (t, c) in class.iter().enumerate() {
        if let Some(c) = c {
            class_name
                .entry(eg.find(*c))
                .or_insert_with(|| src.tensors[t].name.clone());
        }
    }
    let mut node_name: HashMap<Id, String> = HashMap::new();
    for n in &src.nodes {
        if let Some(c) = n.outputs.first().and_then(|t| class[t.index()]) {
            node_name
                .entry(eg.find(c))
                .or_insert_with(|| n.name.clone());
        }
    }
    // How many outputs each op group must bind.
    let mut n_out: BTreeMap<(String, Vec<Id>), usize> = BTreeMap::new();
    for c in &order {
        if let CNode::Op {
            sym, out, children, ..
        } = &chosen[c]
        {
            let e = n_out
                .entry(group_key(eg, sym.as_str(), children))
                .or_insert(0);
            *e = (*e).max(usize::from(*out) + 1);
        }
    }
    let mut b = Builder {
        eg,
        src,
        out: Graph::new(),
        names: HashSet::new(),
        node_names: HashSet::new(),
        node_name,
        class_name,
        tensor_of: HashMap::new(),
        groups: HashMap::new(),
        weights: HashMap::new(),
    };
    let mut inputs = HashMap::new();
    for &t in &src.inputs {
        let info = src.tensor(t);
        b.names.insert(info.name.clone());
        inputs.insert(
            t.0,
            b.out
                .add_input(info.name.clone(), info.dtype, info.shape.clone()),
        );
    }
    // Classes read only as the operand of a transposed weight (or only by such classes: the
    // stored int8 weight of a transposed quantised one) are never built: the transposed
    // weight carries their bytes. `order` is children first, so readers come later.
    let mut readers: HashMap<Id, Vec<Id>> = HashMap::new();
    for c in &order {
        if let CNode::Op { children, .. } = &chosen[c] {
            for ch in children {
                readers.entry(eg.find(*ch)).or_default().push(*c);
            }
        }
    }
    let mut skipped: HashSet<Id> = HashSet::new();
    for c in order.iter().rev() {
        let by_tweight_only = readers.get(c).is_some_and(|rs| {
            rs.iter().all(|r| {
                skipped.contains(r)
                    || matches!(&chosen[r], CNode::Op { sym, .. } if sym.as_str() == TWEIGHT)
            })
        });
        if by_tweight_only && !roots.contains(c) {
            skipped.insert(*c);
        }
    }
    for c in order {
        if skipped.contains(&c) {
            continue;
        }
        let t = match &chosen[&c] {
            CNode::Leaf(t) => match inputs.get(t) {
                Some(&i) => i,
                None => b.weight(*t)?,
            },
            CNode::Const(k) => b.const_weight(c, *k),
            CNode::Attr(_) => continue,
            CNode::Op { sym, children, .. } if sym.as_str() == QWEIGHT => b.qweight(c, children)?,
            CNode::Op { sym, children, .. } if sym.as_str() == TWEIGHT => b.tweight(c, children)?,
            CNode::Op {
                sym, out, children, ..
            } => {
                let key = group_key(eg, sym.as_str(), children);
                let n = n_out.get(&key).copied().unwrap_or(1);
                b.op(c, sym.as_str(), *out, children, n)?
            }
        };
        b.tensor_of.insert(c, t);
    }
    // Outputs keep their names; a class that is an input, a weight or another output's
    // tensor gets an Identity node named after the output.
    let mut used = HashSet::new();
    for &o in &src.outputs {
        let want = &src.tensor(o).name;
        let c = class[o.index()]
            .map(|c| eg.find(c))
            .ok_or("output without a class")?;
        let t = *b.tensor_of.get(&c).ok_or("output not built")?;
        let info = b.out.tensor(t).clone();
        if &info.name == want && used.insert(t) {
            b.out.outputs.push(t);
            continue;
        }
        let name = if b.names.contains(want) {
            b.fresh(want)
        } else {
            want.clone()
        };
        b.names.insert(name.clone());
        let id = b
            .out
            .add_tensor(name.clone(), info.dtype, info.shape, TensorKind::Activation);
        let op = tessera_ir::Op::Unary(tessera_ir::op::UnaryAttrs {
            kind: tessera_ir::op::UnaryOp::Identity,
        });
        b.out
            .add_node(format!("{name}_identity"), op, vec![t], vec![id]);
        b.out.outputs.push(id);
    }
    Ok(b.out)
}
