//! The e-class analysis: dtype and shape (by the op specs' inference), constant values (by
//! folding with the CPU kernels) and whether a value is a parameter (computed from weights
//! and constants only). Guards read it; constants are added to their class as leaves, so
//! `x / 8` and `x · 0.125` meet.
use super::lang::{attr_free_op, has_attr, CNode, QWEIGHT, TWEIGHT};
use egg::{Analysis, DidMerge, EGraph, Id};
use std::collections::HashMap;
use tessera_ir::{DType, Op, Tensor, TensorData};

/// Largest constant (elements) the pass folds or interns: scalars and per-channel vectors
/// (norm scales, biases), never weight matrices (8-bit weights stay quantised leaves).
pub const CONST_MAX: usize = 1 << 12;

/// Analysis data of an e-class.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// Element type and shape of the value (`None` for attribute leaves).
    pub ty: Option<(DType, Vec<usize>)>,
    /// The value, when known (index into [`Interner::consts`]).
    pub konst: Option<u32>,
    /// Computed from weights and constants only.
    pub param: bool,
    /// The attribute op of an attribute leaf (index into [`Interner::ops`]).
    pub attr: Option<u32>,
    /// A parameter with an identity of its own (a float weight of more than one element):
    /// its value is known, but it is not merged with other tensors of equal value (two
    /// norm scales of one value are still two parameters, one per layer).
    pub pinned: bool,
}

/// Interned attribute ops and constants (leaves refer to them by index).
#[derive(Debug, Default)]
pub struct Interner {
    /// Attribute ops.
    pub ops: Vec<Op>,
    op_ids: HashMap<String, u32>,
    /// Constant values.
    pub consts: Vec<Tensor>,
    const_ids: HashMap<String, u32>,
}

impl Interner {
    /// Index of `op`, interned on first use.
    pub fn op(&mut self, op: &Op) -> u32 {
        // Unwrap: Op serialises infallibly (plain data; NaN attributes become null).
        let key = serde_json::to_string(op).unwrap_or_default();
        if let Some(&i) = self.op_ids.get(&key) {
            return i;
        }
        let i = self.ops.len() as u32;
        self.ops.push(op.clone());
        self.op_ids.insert(key, i);
        i
    }

    /// Index of constant `t`, interned on first use; `None` above [`CONST_MAX`].
    pub fn konst(&mut self, t: &Tensor) -> Option<u32> {
        if t.numel() > CONST_MAX {
            return None;
        }
        let mut key = format!("{:?}{:?}", t.dtype, t.shape);
        match &t.data {
            TensorData::F32(v) => v
                .iter()
                .for_each(|x| key.push_str(&format!(",{}", x.to_bits()))),
            TensorData::I64(v) => v.iter().for_each(|x| key.push_str(&format!(",{x}"))),
            TensorData::Bool(v) => v.iter().for_each(|x| key.push(if *x { '1' } else { '0' })),
        }
        if let Some(&i) = self.const_ids.get(&key) {
            return Some(i);
        }
        let i = self.consts.len() as u32;
        self.consts.push(t.clone());
        self.const_ids.insert(key, i);
        Some(i)
    }
}

/// What the analysis knows of a source-graph leaf.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    /// Element type (logical).
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// A weight (else a graph input).
    pub weight: bool,
    /// Its value, for a pinned weight (see [`Data::pinned`]).
    pub konst: Option<u32>,
    /// Inputs of source-graph nodes that read it.
    pub readers: usize,
    /// A quantised weight whose scale is 1 (MatMulInteger's B): its values are its stored
    /// integers minus its zero point.
    pub unit_scale: bool,
}

/// The canonicalisation analysis.
#[derive(Debug, Default)]
pub struct CanonAnalysis {
    /// Interned attributes and constants.
    pub interner: Interner,
    /// Source-graph leaves by tensor id.
    pub leaves: HashMap<u32, LeafInfo>,
}

/// The e-graph type of the pass.
pub type CanonGraph = EGraph<CNode, CanonAnalysis>;

/// The op an op node stands for, from its name and attribute leaf.
pub fn node_op(eg: &CanonGraph, sym: &str, children: &[Id]) -> Option<Op> {
    if let Some(op) = attr_free_op(sym) {
        return Some(op.clone());
    }
    let attr = eg[*children.first()?].data.attr?;
    let op = eg.analysis.interner.ops.get(attr as usize)?.clone();
    has_attr(&op).then_some(op)
}

/// Type of an op node: the op's inference on its operands' types.
pub fn infer_node(eg: &CanonGraph, node: &CNode) -> Option<(DType, Vec<usize>)> {
    let CNode::Op {
        sym, out, children, ..
    } = node
    else {
        return None;
    };
    let sym = sym.as_str();
    if sym == QWEIGHT {
        let (_, shape) = eg[*children.first()?].data.ty.clone()?;
        let (dtype, _) = eg[*children.get(1)?].data.ty.clone()?;
        return Some((dtype, shape));
    }
    let op = node_op(eg, sym, children)?;
    // A transposed weight has the type of the Transpose it replaces.
    let sym = if sym == TWEIGHT { "transpose" } else { sym };
    if sym == "transpose" && !matches!(op, Op::Transpose(_)) {
        return None;
    }
    let operands = &children[usize::from(has_attr(&op))..];
    let tys: Option<Vec<(DType, Vec<usize>)>> =
        operands.iter().map(|c| eg[*c].data.ty.clone()).collect();
    let tys = tys?;
    let refs: Vec<(DType, &[usize])> = tys.iter().map(|(d, s)| (*d, s.as_slice())).collect();
    let outs = tessera_ir::infer::infer(sym, &op, &refs).ok()?;
    outs.get(usize::from(*out)).cloned()
}

/// Folds an op node whose operands are all constants.
fn fold(eg: &mut CanonGraph, node: &CNode, ty: &(DType, Vec<usize>)) -> Option<u32> {
    let CNode::Op {
        sym, out, children, ..
    } = node
    else {
        return None;
    };
    if [QWEIGHT, TWEIGHT].contains(&sym.as_str()) || tessera_ir::numel(&ty.1) > CONST_MAX {
        return None;
    }
    let op = node_op(eg, sym.as_str(), children)?;
    let operands = &children[usize::from(has_attr(&op))..];
    let consts: Option<Vec<Tensor>> = operands
        .iter()
        .map(|c| {
            let k = eg[*c].data.konst?;
            eg.analysis.interner.consts.get(k as usize).cloned()
        })
        .collect();
    let consts = consts?;
    let refs: Vec<&Tensor> = consts.iter().collect();
    let outs = tessera_kernels::eval(&op, &refs).ok()?;
    let t = outs.get(usize::from(*out))?;
    eg.analysis.interner.konst(t)
}

impl Analysis<CNode> for CanonAnalysis {
    type Data = Data;

    fn make(eg: &mut CanonGraph, enode: &CNode) -> Data {
        match enode {
            CNode::Attr(i) => Data {
                ty: None,
                konst: None,
                param: true,
                attr: Some(*i),
                pinned: false,
            },
            CNode::Const(k) => {
                let t = &eg.analysis.interner.consts[*k as usize];
                Data {
                    ty: Some((t.dtype, t.shape.clone())),
                    konst: Some(*k),
                    param: true,
                    attr: None,
                    pinned: false,
                }
            }
            CNode::Leaf(t) => {
                let info = eg.analysis.leaves.get(t);
                Data {
                    ty: info.map(|i| (i.dtype, i.shape.clone())),
                    konst: info.and_then(|i| i.konst),
                    param: info.is_some_and(|i| i.weight),
                    attr: None,
                    pinned: info.is_some_and(|i| i.konst.is_some()),
                }
            }
            CNode::Op { children, .. } => {
                let ty = infer_node(eg, enode);
                let param = children.iter().all(|c| eg[*c].data.param);
                let konst = ty.as_ref().and_then(|ty| fold(eg, enode, ty));
                Data {
                    ty,
                    konst,
                    param,
                    attr: None,
                    pinned: false,
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        if !a.param && b.param {
            a.param = true;
            changed_a = true;
        }
        if a.attr.is_none() && b.attr.is_some() {
            a.attr = b.attr;
            changed_a = true;
        }
        if !a.pinned && b.pinned {
            a.pinned = true;
            changed_a = true;
        }
        let changed_b = (b.ty.is_none() && a.ty.is_some())
            || (b.konst.is_none() && a.konst.is_some())
            || (!b.param && a.param)
            || (!b.pinned && a.pinned);
        DidMerge(changed_a, changed_b)
    }

    fn modify(eg: &mut CanonGraph, id: Id) {
        if let (Some(k), false) = (eg[id].data.konst, eg[id].data.pinned) {
            let leaf = eg.add(CNode::Const(k));
            eg.union(id, leaf);
        }
    }
}
