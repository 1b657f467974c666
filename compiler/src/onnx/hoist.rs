//! Import phase `hoist`: computations that do not depend on the model's activations (masks
//! and positions derived from the graph inputs) are moved ahead of the first node that does.
//!
//! Exporters often build such a value inside the first layer and reuse it in the later ones
//! (the dynamo exporter's causal mask `Where` is computed where the first attention needs
//! it). Then the layers differ in shape — the first computes the mask, the others read it —
//! and repeated-layer detection cannot see them as copies. Any topological order computes the
//! same function, so the phase only permutes nodes: a stable topological order in which
//! *invariant* nodes go first whenever they are ready.
//!
//! A node is *invariant* when it reads no weight matrix (a MatMul operand other than an outer
//! product's, a Gemm or Einsum operand, a convolution kernel, or a Gather table of rank ≥ 2
//! looked up at indices that are not constant: the layers' parameters) and
//! no value computed from one. An invariant
//! node is hoisted when its value is shared: read by two or more other nodes that are not
//! invariant, or an operand of a hoisted node. A per-layer buffer (GPT-2's causal-mask
//! `attn.bias` of every layer, sliced where its layer reads it) is read once and stays in its
//! layer.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tessera_ir::{Graph, Op, TensorKind};

/// Does `node` read a weight matrix directly?
fn reads_parameters(g: &Graph, node: &tessera_ir::Node) -> bool {
    let weight_matrix = |i: usize| {
        node.inputs.get(i).is_some_and(|t| {
            g.tensor(*t).kind == TensorKind::Weight && g.tensor(*t).shape.len() >= 2
        })
    };
    match node.op {
        // An outer product (contracted extent 1) is no layer: the rotary angles
        // inv_freq[B, F, 1] · positions[B, 1, S] of a traced export are a function of the
        // graph inputs, computed once and read by every layer.
        Op::MatMul(_) => {
            let contracted = node
                .inputs
                .first()
                .and_then(|t| g.tensor(*t).shape.last().copied());
            contracted != Some(1) && (weight_matrix(0) || weight_matrix(1))
        }
        Op::Gemm(_) => weight_matrix(0) || weight_matrix(1),
        // A convolution's kernel: a vision tower's patch embedding is a layer's input, not
        // an invariant (hoisted, it pulled a text tower's mask into the vision layers).
        Op::Conv(_) | Op::ConvTranspose(_) => weight_matrix(1),
        Op::Einsum(_) => (0..node.inputs.len()).any(weight_matrix),
        // A lookup at constant indices (rotary cos/sin rows of a quantised table at the
        // positions 0..S) is a function of the parameters alone, not a token embedding.
        Op::Gather(_) => {
            weight_matrix(0)
                && !node
                    .inputs
                    .get(1)
                    .is_some_and(|t| g.tensor(*t).kind == TensorKind::Weight)
        }
        _ => false,
    }
}

/// Reorders `g.nodes` so that invariant nodes come as early as they can (see the module
/// docs); returns how many nodes changed position.
pub fn hoist_invariants(g: &mut Graph) -> usize {
    let n = g.nodes.len();
    let producers = g.producers();
    let mut varying = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        varying[i] = reads_parameters(g, node)
            || node
                .inputs
                .iter()
                .any(|t| producers[t.index()].is_some_and(|p| varying[p.index()]));
    }
    let mut pending = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate() {
        for t in &node.inputs {
            if let Some(p) = producers[t.index()] {
                pending[i] += 1;
                readers[p.index()].push(i);
            }
        }
    }
    // Hoisted: invariant and shared (readers come later in the order, so one reverse pass).
    let mut hoisted = vec![false; n];
    for i in (0..n).rev() {
        let varying_readers = readers[i].iter().filter(|&&r| varying[r]).count();
        hoisted[i] =
            !varying[i] && (varying_readers >= 2 || readers[i].iter().any(|&r| hoisted[r]));
    }
    // Ready nodes run hoisted first, then in source order: every other node keeps its place.
    let mut heap: BinaryHeap<Reverse<(bool, usize)>> = (0..n)
        .filter(|&i| pending[i] == 0)
        .map(|i| Reverse((!hoisted[i], i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = heap.pop() {
        order.push(i);
        for &r in &readers[i] {
            pending[r] -= 1;
            if pending[r] == 0 {
                heap.push(Reverse((!hoisted[r], r)));
            }
        }
    }
    // Every node is reached: the graph is acyclic and its nodes were in topological order.
    debug_assert_eq!(order.len(), n);
    if order.len() != n {
        return 0;
    }
    let moved = order.iter().enumerate().filter(|(k, i)| k != *i).count();
    if moved > 0 {
        let mut old: Vec<Option<tessera_ir::Node>> =
            std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
        // Each index appears once in `order`, so every take finds its node.
        g.nodes = order.iter().filter_map(|&i| old[i].take()).collect();
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::op::{BinaryAttrs, BinaryOp, MatMulAttrs, UnaryAttrs, UnaryOp};
    use tessera_ir::{DType, Tensor, Weight};

    fn add() -> Op {
        Op::Binary(BinaryAttrs {
            kind: BinaryOp::Add,
        })
    }

    /// x·w, then `reads` additions of neg(m) (computed after the MatMul, as in the export).
    fn graph(reads: usize) -> Graph {
        let mut g = Graph::new();
        let x = g.add_tensor("x", DType::F32, vec![2, 4], TensorKind::Input);
        let m = g.add_tensor("m", DType::F32, vec![2, 4], TensorKind::Input);
        let w = g.add_tensor("w", DType::F32, vec![4, 4], TensorKind::Weight);
        g.weights.insert(
            w,
            Weight::constant("w", Tensor::f32(vec![4, 4], vec![0.0; 16])),
        );
        let mut y = g.add_tensor("y", DType::F32, vec![2, 4], TensorKind::Activation);
        let mask = g.add_tensor("mask", DType::F32, vec![2, 4], TensorKind::Activation);
        g.add_node("mm", Op::MatMul(MatMulAttrs {}), vec![x, w], vec![y]);
        g.add_node(
            "neg",
            Op::Unary(UnaryAttrs { kind: UnaryOp::Neg }),
            vec![m],
            vec![mask],
        );
        for k in 0..reads {
            let z = g.add_tensor(
                format!("z{k}"),
                DType::F32,
                vec![2, 4],
                TensorKind::Activation,
            );
            g.add_node(format!("add{k}"), add(), vec![y, mask], vec![z]);
            y = z;
        }
        g.outputs = vec![y];
        g.inputs = vec![x, m];
        g
    }

    #[test]
    fn a_mask_built_in_the_first_layer_and_read_by_two_moves_ahead() {
        let mut g = graph(2);
        assert_eq!(hoist_invariants(&mut g), 2);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["neg", "mm", "add0", "add1"]);
        assert_eq!(hoist_invariants(&mut g), 0);
    }

    /// x·w, then two additions of rows of `table` looked up at `idx` (a constant when
    /// `constant`, else a graph input), the lookup placed after the MatMul.
    fn lookup_graph(constant: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.add_tensor("x", DType::F32, vec![2, 4], TensorKind::Input);
        let w = g.add_tensor("w", DType::F32, vec![4, 4], TensorKind::Weight);
        g.weights.insert(
            w,
            Weight::constant("w", Tensor::f32(vec![4, 4], vec![0.0; 16])),
        );
        let table = g.add_tensor("table", DType::F32, vec![8, 4], TensorKind::Weight);
        g.weights.insert(
            table,
            Weight::constant("table", Tensor::f32(vec![8, 4], vec![1.0; 32])),
        );
        let idx_kind = if constant {
            TensorKind::Weight
        } else {
            TensorKind::Input
        };
        let idx = g.add_tensor("idx", DType::I64, vec![2], idx_kind);
        if constant {
            g.weights.insert(
                idx,
                Weight::constant("idx", Tensor::i64(vec![2], vec![0, 1])),
            );
        }
        let y = g.add_tensor("y", DType::F32, vec![2, 4], TensorKind::Activation);
        let rows = g.add_tensor("rows", DType::F32, vec![2, 4], TensorKind::Activation);
        g.add_node("mm", Op::MatMul(MatMulAttrs {}), vec![x, w], vec![y]);
        g.add_node(
            "lookup",
            Op::Gather(tessera_ir::op::AxisAttrs { axis: 0 }),
            vec![table, idx],
            vec![rows],
        );
        let mut cur = y;
        for k in 0..2 {
            let z = g.add_tensor(
                format!("z{k}"),
                DType::F32,
                vec![2, 4],
                TensorKind::Activation,
            );
            g.add_node(format!("add{k}"), add(), vec![cur, rows], vec![z]);
            cur = z;
        }
        g.outputs = vec![cur];
        g.inputs = if constant { vec![x] } else { vec![x, idx] };
        g
    }

    #[test]
    fn a_table_looked_up_at_constant_positions_moves_ahead_a_token_lookup_does_not() {
        // Rotary cos/sin rows at positions 0..S: a function of the parameters alone.
        let mut g = lookup_graph(true);
        assert_eq!(hoist_invariants(&mut g), 2);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["lookup", "mm", "add0", "add1"]);
        // At indices from an input it is a token embedding: it stays.
        let mut g = lookup_graph(false);
        assert_eq!(hoist_invariants(&mut g), 0);
    }

    #[test]
    fn a_value_read_once_stays_where_it_is() {
        let mut g = graph(1);
        assert_eq!(hoist_invariants(&mut g), 0);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["mm", "neg", "add0"]);
    }

    /// A patch embedding (Conv) read by two MatMuls, then a mask from the graph inputs
    /// read by two additions (a vision tower, then a text tower's mask, as CLIP exports).
    #[test]
    fn a_convolution_is_a_layer_input_and_a_later_mask_moves_ahead_of_it() {
        let mut g = Graph::new();
        let t = |g: &mut Graph, name: &str, shape: Vec<usize>, kind| {
            g.add_tensor(name, DType::F32, shape, kind)
        };
        let x = t(&mut g, "x", vec![1, 1, 2, 4], TensorKind::Input);
        let m = t(&mut g, "m", vec![1, 1, 2, 4], TensorKind::Input);
        let k = t(&mut g, "k", vec![1, 1, 1, 1], TensorKind::Weight);
        let w = t(&mut g, "w", vec![4, 4], TensorKind::Weight);
        g.weights.insert(
            k,
            Weight::constant("k", Tensor::f32(vec![1, 1, 1, 1], vec![1.0])),
        );
        g.weights.insert(
            w,
            Weight::constant("w", Tensor::f32(vec![4, 4], vec![0.0; 16])),
        );
        let conv = Op::Conv(tessera_ir::op::ConvAttrs {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0; 4],
            group: 1,
            depthwise: false,
        });
        let act = |g: &mut Graph, name: &str| t(g, name, vec![1, 1, 2, 4], TensorKind::Activation);
        let (c, a, b, mask) = (
            act(&mut g, "c"),
            act(&mut g, "a"),
            act(&mut g, "b"),
            act(&mut g, "mask"),
        );
        let (z0, z1, out) = (act(&mut g, "z0"), act(&mut g, "z1"), act(&mut g, "out"));
        g.add_node("conv", conv, vec![x, k], vec![c]);
        g.add_node("mm0", Op::MatMul(MatMulAttrs {}), vec![c, w], vec![a]);
        g.add_node("mm1", Op::MatMul(MatMulAttrs {}), vec![c, w], vec![b]);
        let neg = Op::Unary(UnaryAttrs { kind: UnaryOp::Neg });
        g.add_node("neg", neg, vec![m], vec![mask]);
        g.add_node("add0", add(), vec![a, mask], vec![z0]);
        g.add_node("add1", add(), vec![b, mask], vec![z1]);
        g.add_node("add2", add(), vec![z0, z1], vec![out]);
        g.outputs = vec![out];
        g.inputs = vec![x, m];
        assert_eq!(hoist_invariants(&mut g), 4);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["neg", "conv", "mm0", "mm1", "add0", "add1", "add2"]);
    }

    /// x·w, then two additions of rotary angles inv_freq[2, 4, 1] · positions[2, 1, 4] (an
    /// outer product) computed after the MatMul, as a traced LLaMA export writes them.
    #[test]
    fn an_outer_product_of_a_constant_and_an_input_moves_ahead() {
        let mut g = Graph::new();
        let x = g.add_tensor("x", DType::F32, vec![2, 4, 4], TensorKind::Input);
        let pos = g.add_tensor("pos", DType::F32, vec![2, 1, 4], TensorKind::Input);
        let w = g.add_tensor("w", DType::F32, vec![4, 4], TensorKind::Weight);
        let freq = g.add_tensor("freq", DType::F32, vec![2, 4, 1], TensorKind::Weight);
        g.weights.insert(
            w,
            Weight::constant("w", Tensor::f32(vec![4, 4], vec![0.0; 16])),
        );
        g.weights.insert(
            freq,
            Weight::constant("freq", Tensor::f32(vec![2, 4, 1], vec![1.0; 8])),
        );
        let act = |g: &mut Graph, name: &str| {
            g.add_tensor(name, DType::F32, vec![2, 4, 4], TensorKind::Activation)
        };
        let (y, angles, z0, z1) = (
            act(&mut g, "y"),
            act(&mut g, "angles"),
            act(&mut g, "z0"),
            act(&mut g, "z1"),
        );
        g.add_node("mm", Op::MatMul(MatMulAttrs {}), vec![x, w], vec![y]);
        g.add_node(
            "outer",
            Op::MatMul(MatMulAttrs {}),
            vec![freq, pos],
            vec![angles],
        );
        g.add_node("add0", add(), vec![y, angles], vec![z0]);
        g.add_node("add1", add(), vec![z0, angles], vec![z1]);
        g.outputs = vec![z1];
        g.inputs = vec![x, pos];
        assert_eq!(hoist_invariants(&mut g), 2);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["outer", "mm", "add0", "add1"]);
    }
}
