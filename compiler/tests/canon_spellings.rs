//! Spellings that real exports emit: a square is spelled the same in every layer, however
//! deep its operand (extraction pays a child read twice by one e-node, `x · x`, once, as the
//! DAG does); an RMSNorm whose epsilon the export dropped is still RMSNorm, and so is one
//! that the TorchScript exporter writes with `Div(1, sqrt(..))`; two LayerNorms written out
//! over one input spell the same in every layer.
mod partition_common;

use partition_common::{canon_with, B};
use tessera_compiler::canon::{builtin, CanonReport};
use tessera_ir::op::{BinaryOp, ReduceAttrs, ReduceKind, UnaryOp};
use tessera_ir::{DType, Graph, Op};

/// Canonicalises `b` with the built-in rules.
fn canon(b: &B) -> (Graph, CanonReport) {
    canon_with(b, &builtin())
}

/// ReduceMean over axis 2 (the last of these `[2, 3, 8]` tests), keeping it.
fn mean_last(b: &mut B, x: tessera_ir::TensorId) -> tessera_ir::TensorId {
    b.op(
        Op::Reduce(ReduceAttrs {
            kind: ReduceKind::Mean,
            axes: vec![2],
            keepdims: true,
        }),
        &[x],
    )
}

#[test]
fn every_layer_squares_with_the_same_op() {
    // x_{i+1} = x_i + (x_i ^ 2) · W_i for three layers: the first squares a graph input
    // (free), the later ones a sum of everything upstream.
    let mut b = B::new();
    let mut x = b.input("x", DType::F32, &[2, 8]);
    for i in 0..3 {
        let two = b.konst(&format!("two{i}"), 2.0);
        let sq = b.bin(BinaryOp::Pow, x, two);
        let w = b.weight(&format!("w{i}"), &[8, 8]);
        let y = b.matmul(sq, w);
        x = b.bin(BinaryOp::Add, x, y);
    }
    b.output(x);
    let (g, r) = canon(&b);
    assert!(r.applied.contains_key("square"), "{r:?}");
    // Every square is x · x: three Muls reading one tensor twice, no Pow left.
    assert_eq!(r.ops_after.get("Pow"), None, "{r:?}");
    let squares = g
        .nodes
        .iter()
        .filter(|n| n.op.name() == "Mul" && n.inputs.len() == 2 && n.inputs[0] == n.inputs[1])
        .count();
    assert_eq!(squares, 3, "{r:?}");
}

#[test]
fn rms_norm_without_epsilon_is_rms_norm_with_epsilon_zero() {
    // Helium's export: w · (x · 1/sqrt(mean(x ^ 2))), its 1e-8 epsilon gone.
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[2, 3, 8]);
    let two = b.konst("two", 2.0);
    let sq = b.bin(BinaryOp::Pow, x, two);
    let mean = mean_last(&mut b, sq);
    let root = b.un(UnaryOp::Sqrt, mean);
    let inv = b.un(UnaryOp::Reciprocal, root);
    let normed = b.bin(BinaryOp::Mul, x, inv);
    let w = b.weight("w", &[8]);
    let y = b.bin(BinaryOp::Mul, w, normed);
    b.output(y);
    let (g, r) = canon(&b);
    assert_eq!(
        r.ops_after.iter().collect::<Vec<_>>(),
        vec![(&"RmsNorm".to_string(), &1)],
        "{r:?}"
    );
    let norm = &g.nodes[0];
    let Op::RmsNorm(a) = &norm.op else {
        panic!("{:?}", norm.op)
    };
    assert_eq!((a.axis, a.epsilon), (2, 0.0));
    assert_eq!(
        g.weights[&norm.inputs[1]].name, "w",
        "the scale is the weight"
    );
}

#[test]
fn rms_norm_with_its_reciprocal_written_as_a_division_of_one_is_rms_norm() {
    // The TorchScript exporter's spelling of x · rsqrt(mean(x²) + eps) · w, four layers
    // (Gemma, LLaMA at opset 17): Div(1, sqrt) became 1 · (1/sqrt), which no pattern read
    // until Div(1, b) = 1/b (rule `one-over`); Gemma's norms stayed written out and no
    // layers were found.
    let mut b = B::new();
    let mut x = b.input("x", DType::F32, &[2, 3, 8]);
    for i in 0..4 {
        let two = b.konst(&format!("two{i}"), 2.0);
        let sq = b.bin(BinaryOp::Pow, x, two);
        let mean = mean_last(&mut b, sq);
        let eps = b.konst(&format!("eps{i}"), 1e-6);
        let var = b.bin(BinaryOp::Add, mean, eps);
        let root = b.un(UnaryOp::Sqrt, var);
        let one = b.konst(&format!("one{i}"), 1.0);
        let inv = b.bin(BinaryOp::Div, one, root);
        let normed = b.bin(BinaryOp::Mul, x, inv);
        let w = b.weight(&format!("w{i}"), &[8]);
        let scaled = b.bin(BinaryOp::Mul, normed, w);
        let m = b.weight(&format!("m{i}"), &[8, 8]);
        x = b.matmul(scaled, m);
    }
    b.output(x);
    let (_, r) = canon(&b);
    assert_eq!(r.applied.get("rms-norm"), Some(&4), "{r:?}");
    assert_eq!(r.ops_after.get("RmsNorm"), Some(&4), "{r:?}");
    assert_eq!(r.ops_after.get("Sqrt"), None, "{r:?}");
}

/// LayerNorm written out at opset 14: (x − mean) / sqrt(mean((x − mean)²) + eps) · w + b.
fn written_layernorm(b: &mut B, name: &str, x: tessera_ir::TensorId) -> tessera_ir::TensorId {
    let mean = mean_last(b, x);
    let d = b.bin(BinaryOp::Sub, x, mean);
    let two = b.konst(&format!("{name}_two"), 2.0);
    let sq = b.bin(BinaryOp::Pow, d, two);
    let var = mean_last(b, sq);
    let eps = b.konst(&format!("{name}_eps"), 1e-5);
    let v = b.bin(BinaryOp::Add, var, eps);
    let root = b.un(UnaryOp::Sqrt, v);
    let n = b.bin(BinaryOp::Div, d, root);
    let w = b.weight(&format!("{name}_w"), &[8]);
    let scaled = b.bin(BinaryOp::Mul, n, w);
    let bias = b.weight(&format!("{name}_b"), &[8]);
    b.bin(BinaryOp::Add, scaled, bias)
}

#[test]
fn two_written_out_layernorms_of_one_input_are_two_layernorms_in_every_layer() {
    // GPT-NeoX's parallel residual at opset 14: x + attn(LN_a(x)) + mlp(LN_b(x)), where
    // LN_a and LN_b normalise the same x (one e-class) with their own scale and bias. The
    // amortised extraction spelled the first layer as two LayerNorms and the later ones as
    // one shared normalisation scaled by Mul and Add twice (here from the third layer on),
    // so the layers differed.
    const LAYERS: usize = 6;
    let mut b = B::new();
    let mut x = b.input("x", DType::F32, &[2, 3, 8]);
    for i in 0..LAYERS {
        let a = written_layernorm(&mut b, &format!("a{i}"), x);
        let m = written_layernorm(&mut b, &format!("m{i}"), x);
        let wa = b.weight(&format!("wa{i}"), &[8, 8]);
        let wm = b.weight(&format!("wm{i}"), &[8, 8]);
        let (ya, ym) = (b.matmul(a, wa), b.matmul(m, wm));
        let y = b.bin(BinaryOp::Add, ya, ym);
        x = b.bin(BinaryOp::Add, x, y);
    }
    b.output(x);
    let (_, r) = canon(&b);
    assert_eq!(r.ops_after.get("LayerNorm"), Some(&(2 * LAYERS)), "{r:?}");
    assert_eq!(r.ops_after.get("Mul"), None, "{r:?}");
    // Per layer: 2 LayerNorms, 2 MatMuls, 2 Adds.
    assert_eq!(r.ops_after.values().sum::<usize>(), 6 * LAYERS, "{r:?}");
}
