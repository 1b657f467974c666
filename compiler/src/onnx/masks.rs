//! Import phase `masks`: stored causal masks become computed ones.
//!
//! GPT-2-style exports store a causal mask per layer as a buffer: `attn.bias`, a
//! `[1, 1, P, P]` lower triangle (booleans, or 0 below the diagonal and a large negative
//! number above, added to the scores) that each layer slices to its sequence. Such a
//! constant is no parameter, yet a plan stored it on every rank, once per layer (64 KiB per
//! layer at P = 128 in f32; 1 MiB per layer of a 1024-position bool buffer). This phase
//! replaces every constant that holds exactly that pattern with the same values computed
//! from a scalar — `Where(Cast(Trilu(Expand(1))), below, above)`, or the `Cast` alone for
//! booleans — built once per distinct mask and read by every layer that stored a copy. The
//! runtime computes activation-independent steps once per session (its constant cache),
//! so no run pays for it, and no rank stores it. A mask of at most 4,096 elements (a 64 ×
//! 64 slice) is folded back by the canonicaliser into one stored constant, which every layer
//! then shares.
use std::collections::BTreeMap;
use tessera_ir::op::{CastAttrs, ExpandAttrs, TriluAttrs};
use tessera_ir::{DType, Graph, Node, Op, Tensor, TensorData, TensorId, TensorKind, Weight};

/// The values of a causal mask: `below` on and under the diagonal, `above` over it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Causal {
    /// Booleans: true on and under the diagonal.
    Bool,
    /// Floats (bit patterns, so that -inf and NaN compare).
    Float { below: u32, above: u32 },
}

/// Masks with a side shorter than this are left stored (nothing to gain).
const MIN_SIDE: usize = 2;

/// The sides `(P, Q)` of a mask-shaped `shape`: every axis but the last two of extent 1,
/// the last two at least [`MIN_SIDE`].
fn mask_sides(shape: &[usize]) -> Option<(usize, usize)> {
    let r = shape.len();
    if r < 2 || shape[..r - 2].iter().any(|&d| d != 1) {
        return None;
    }
    let (p, q) = (shape[r - 2], shape[r - 1]);
    (p >= MIN_SIDE && q >= MIN_SIDE).then_some((p, q))
}

/// Whether `t` is a causal mask: [`mask_sides`], and element `(i, j)` one value where
/// `j ≤ i` and another where `j > i`.
fn causal_pattern(t: &Tensor) -> Option<Causal> {
    let (_, q) = mask_sides(&t.shape)?;
    let lower = |k: usize| k % q <= k / q;
    match &t.data {
        TensorData::Bool(v) => v
            .iter()
            .enumerate()
            .all(|(k, &b)| b == lower(k))
            .then_some(Causal::Bool),
        TensorData::F32(v) if t.dtype == DType::F32 => {
            let (below, above) = (v[0].to_bits(), v[1].to_bits());
            let ok = below != above
                && v.iter()
                    .enumerate()
                    .all(|(k, x)| x.to_bits() == if lower(k) { below } else { above });
            ok.then_some(Causal::Float { below, above })
        }
        _ => None,
    }
}

/// Largest mask (elements) decoded for this phase beyond the folded constants.
const MAX_MASK_ELEMS: usize = 1 << 24;

/// Whether an initializer of `shape` and `dtype` may be a causal mask worth decoding:
/// [`mask_sides`], boolean or f32, at most [`MAX_MASK_ELEMS`] elements.
pub(crate) fn may_be_mask(shape: &[usize], dtype: DType) -> bool {
    mask_sides(shape).is_some()
        && matches!(dtype, DType::Bool | DType::F32)
        && tessera_ir::checked_numel(shape).is_some_and(|n| n <= MAX_MASK_ELEMS)
}

/// Replaces every stored causal mask of `graph` (its value in `consts`, or among `large`:
/// initializers too large to fold, decoded by name) by a computation of it, shared by all
/// copies of one mask. Returns how many stored masks were replaced. Run before `validate`:
/// the new nodes go first, and validation infers their outputs.
pub(crate) fn compute_causal_masks(
    graph: &mut Graph,
    consts: &mut BTreeMap<TensorId, Tensor>,
    large: BTreeMap<String, Tensor>,
) -> usize {
    let found: Vec<(TensorId, Causal)> = graph
        .weights
        .iter()
        .filter(|(_, w)| w.quant.is_none() && w.perm.is_none() && w.packed_bits.is_none())
        // A graph output keeps its tensor (and name): such a constant stays stored.
        .filter(|(t, _)| !graph.outputs.contains(t))
        .filter_map(|(t, w)| {
            let value = consts.get(t).or_else(|| large.get(&w.name))?;
            Some((*t, causal_pattern(value)?))
        })
        .collect();
    if found.is_empty() {
        return 0;
    }
    let mut built: Vec<(Vec<usize>, Causal, TensorId)> = Vec::new();
    let mut front: Vec<Node> = Vec::new();
    let mut replace: BTreeMap<TensorId, TensorId> = BTreeMap::new();
    for (t, kind) in found {
        let shape = graph.tensor(t).shape.clone();
        let existing = built
            .iter()
            .find(|(s, k, _)| *s == shape && *k == kind)
            .map(|b| b.2);
        let mask = match existing {
            Some(m) => m,
            None => {
                let m = build(graph, consts, &mut front, (&shape, kind, built.len()));
                built.push((shape, kind, m));
                m
            }
        };
        replace.insert(t, mask);
    }
    for node in &mut graph.nodes {
        for i in &mut node.inputs {
            if let Some(m) = replace.get(i) {
                *i = *m;
            }
        }
    }
    for t in replace.keys() {
        graph.weights.remove(t);
        consts.remove(t);
    }
    // The masks read only constants: they go ahead of every node.
    front.append(&mut graph.nodes);
    graph.nodes = front;
    replace.len()
}

/// Appends to `front` the nodes computing one causal mask of `shape`; returns its tensor.
fn build(
    graph: &mut Graph,
    consts: &mut BTreeMap<TensorId, Tensor>,
    front: &mut Vec<Node>,
    (shape, kind, index): (&[usize], Causal, usize),
) -> TensorId {
    let name = |s: &str| format!("causal_mask_{index}/{s}");
    let mut scalar = |graph: &mut Graph, s: &str, x: f32| {
        let t = Tensor::new(DType::F32, vec![], TensorData::F32(vec![x]))
            .expect("invariant: one f32 element for a scalar f32 tensor");
        let id = graph.add_weight(Weight::constant(name(s), t.clone()));
        consts.insert(id, t);
        id
    };
    let mut node = |graph: &mut Graph, s: &str, op: Op, inputs: Vec<TensorId>, dtype| {
        let out = graph.add_tensor(name(s), dtype, shape.to_vec(), TensorKind::Activation);
        front.push(Node {
            name: name(s),
            op,
            inputs,
            outputs: vec![out],
        });
        out
    };
    let one = scalar(graph, "one", 1.0);
    let ones = node(
        graph,
        "ones",
        Op::Expand(ExpandAttrs {
            shape: shape.to_vec(),
        }),
        vec![one],
        DType::F32,
    );
    let tril = node(
        graph,
        "lower",
        Op::Trilu(TriluAttrs { upper: false, k: 0 }),
        vec![ones],
        DType::F32,
    );
    let keep = node(
        graph,
        "keep",
        Op::Cast(CastAttrs { to: DType::Bool }),
        vec![tril],
        DType::Bool,
    );
    match kind {
        Causal::Bool => keep,
        Causal::Float { below, above } => {
            let b = scalar(graph, "below", f32::from_bits(below));
            let a = scalar(graph, "above", f32::from_bits(above));
            node(graph, "mask", Op::Where, vec![keep, b, a], DType::F32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph reading `mask` (an initializer) in an Add with an input of its shape.
    fn graph_with(mask: Tensor) -> (Graph, BTreeMap<TensorId, Tensor>) {
        let mut g = Graph::new();
        let shape = mask.shape.clone();
        let dtype = mask.dtype;
        let x = g.add_input("x", dtype, shape.clone());
        let w = g.add_weight(Weight::constant("attn.bias", mask.clone()));
        let y = g.add_tensor("y", dtype, shape, TensorKind::Activation);
        let op = if dtype == DType::Bool {
            Op::Where
        } else {
            Op::Binary(tessera_ir::op::BinaryAttrs {
                kind: tessera_ir::op::BinaryOp::Add,
            })
        };
        let inputs = if dtype == DType::Bool {
            vec![w, x, x]
        } else {
            vec![x, w]
        };
        g.add_node("use", op, inputs, vec![y]);
        g.outputs.push(y);
        (g, BTreeMap::from([(w, mask)]))
    }

    /// Evaluates the nodes before `use` (the computed mask) with the kernels.
    fn computed(g: &Graph, consts: &BTreeMap<TensorId, Tensor>) -> Tensor {
        let mut vals = consts.clone();
        for nd in g.nodes.iter().filter(|nd| nd.name != "use") {
            let ins: Vec<&Tensor> = nd.inputs.iter().map(|t| &vals[t]).collect();
            let out = tessera_kernels::eval(&nd.op, &ins).expect("mask kernels run");
            vals.insert(nd.outputs[0], out.into_iter().next().expect("one output"));
        }
        let used = g.nodes.last().expect("the Add").inputs.clone();
        vals[used
            .iter()
            .find(|t| !g.inputs.contains(t))
            .expect("the mask")]
        .clone()
    }

    fn float_mask(p: usize, q: usize, below: f32, above: f32) -> Tensor {
        let v = (0..p * q)
            .map(|k| if k % q <= k / q { below } else { above })
            .collect();
        Tensor::new(DType::F32, vec![1, 1, p, q], TensorData::F32(v)).expect("shape")
    }

    #[test]
    fn additive_and_boolean_masks_are_computed_equal() {
        for mask in [
            float_mask(5, 5, 0.0, -1e9),
            float_mask(4, 6, 0.0, f32::NEG_INFINITY),
            float_mask(6, 3, 1.0, 0.0),
        ] {
            let (mut g, mut consts) = graph_with(mask.clone());
            assert_eq!(
                compute_causal_masks(&mut g, &mut consts, BTreeMap::new()),
                1
            );
            assert!(!g.weights.values().any(|w| w.name == "attn.bias"));
            let got = computed(&g, &consts);
            let (TensorData::F32(a), TensorData::F32(b)) = (&got.data, &mask.data) else {
                panic!("float masks stay float: {got:?}");
            };
            assert_eq!(got.shape, mask.shape);
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        let v: Vec<bool> = (0..16).map(|k| k % 4 <= k / 4).collect();
        let mask = Tensor::new(DType::Bool, vec![1, 1, 4, 4], TensorData::Bool(v)).expect("shape");
        let (mut g, mut consts) = graph_with(mask.clone());
        assert_eq!(
            compute_causal_masks(&mut g, &mut consts, BTreeMap::new()),
            1
        );
        assert_eq!(computed(&g, &consts), mask);
    }

    #[test]
    fn other_constants_stay_stored() {
        // Upper triangle, three values, a batch axis over 1, one side of 1.
        let upper = {
            let mut m = float_mask(4, 4, 0.0, -1e9);
            if let TensorData::F32(v) = &mut m.data {
                v.reverse();
            }
            m
        };
        let mut three = float_mask(4, 4, 0.0, -1e9);
        if let TensorData::F32(v) = &mut three.data {
            v[0] = 2.0;
        }
        let batch =
            Tensor::new(DType::F32, vec![2, 2, 2], TensorData::F32(vec![0.0; 8])).expect("shape");
        let row =
            Tensor::new(DType::F32, vec![1, 4], TensorData::F32(vec![0.0; 4])).expect("shape");
        for t in [upper, three, batch, row] {
            let (mut g, mut consts) = graph_with(t);
            assert_eq!(
                compute_causal_masks(&mut g, &mut consts, BTreeMap::new()),
                0
            );
            assert_eq!(g.nodes.len(), 1);
        }
    }

    #[test]
    fn a_mask_that_is_a_graph_output_stays_stored() {
        let (mut g, mut consts) = graph_with(float_mask(4, 4, 0.0, -1e9));
        let w = g.nodes[0].inputs[1];
        g.outputs.push(w);
        assert_eq!(
            compute_causal_masks(&mut g, &mut consts, BTreeMap::new()),
            0
        );
        assert!(g.weights.contains_key(&w));
    }

    #[test]
    fn copies_of_one_mask_share_one_computation() {
        let mask = float_mask(8, 8, 0.0, -1e4);
        let (mut g, mut consts) = graph_with(mask.clone());
        let x = g.inputs[0];
        let w2 = g.add_weight(Weight::constant("h.1.attn.bias", mask.clone()));
        consts.insert(w2, mask);
        let y2 = g.add_tensor("y2", DType::F32, vec![1, 1, 8, 8], TensorKind::Activation);
        let add = Op::Binary(tessera_ir::op::BinaryAttrs {
            kind: tessera_ir::op::BinaryOp::Add,
        });
        g.add_node("use2", add, vec![x, w2], vec![y2]);
        assert_eq!(
            compute_causal_masks(&mut g, &mut consts, BTreeMap::new()),
            2
        );
        // Expand, Trilu, Cast and Where once, then the two Adds reading the same mask.
        assert_eq!(g.nodes.len(), 6);
        assert_eq!(g.nodes[4].inputs[1], g.nodes[5].inputs[1]);
    }
}
