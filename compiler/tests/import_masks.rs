//! Import phase `masks` on a model file: two layers' stored causal buffers (GPT-2's
//! `attn.bias`, here `[1, 1, 320, 320]`: over the folding limit, so read for the phase
//! alone) sliced to the sequence and added to the scores become one computed mask; the
//! imported graph stores neither buffer and computes the same sums.
mod import_util;

use import_util::*;
use std::collections::BTreeMap;
use tessera_compiler::onnx::import_bytes;
use tessera_ir::{DType, Tensor, TensorData, TensorId};

const P: usize = 320;
const S: usize = 16;

fn causal(p: usize) -> Vec<f32> {
    (0..p * p)
        .map(|k| if k % p <= k / p { 0.0 } else { -1e9 })
        .collect()
}

#[test]
fn stored_causal_buffers_become_one_computed_mask() {
    let mut b = ModelBuilder::new(17);
    b.input("x", 1, &[D::N(1), D::N(1), D::N(S as i64), D::N(S as i64)]);
    b.const_i64("starts", &[2], &[0, 0]);
    b.const_i64("ends", &[2], &[S as i64, S as i64]);
    b.const_i64("axes", &[2], &[2, 3]);
    for l in 0..2 {
        let buf = format!("h.{l}.attn.bias");
        b.init_f32_raw(&buf, &[1, 1, P as i64, P as i64], &causal(P));
        let (m, y) = (format!("m{l}"), format!("y{l}"));
        b.node("Slice", &[&buf, "starts", "ends", "axes"], &[&m], vec![]);
        b.node("Add", &["x", &m], &[&y], vec![]);
        b.output(&y);
    }
    let m = import_bytes(&b.bytes(), "t.onnx", &opts("")).expect("imports");
    let g = &m.graph;
    assert!(
        !g.weights.values().any(|w| w.name.contains("attn.bias")),
        "a buffer is still stored: {:?}",
        g.weights.values().map(|w| &w.name).collect::<Vec<_>>()
    );
    assert!(g.weight_bytes() < 64, "stored {} bytes", g.weight_bytes());
    let trilu = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, tessera_ir::Op::Trilu(_)))
        .count();
    assert_eq!(trilu, 1, "one computation for both copies");

    // Evaluate the imported graph with the kernels: x + mask[:S, :S] per layer.
    let x: Vec<f32> = (0..S * S).map(|k| k as f32 * 0.5).collect();
    let mut vals: BTreeMap<TensorId, Tensor> = g
        .weights
        .iter()
        .map(|(t, w)| (*t, w.inline().expect("small constants are inline").clone()))
        .collect();
    let xt = Tensor::new(DType::F32, vec![1, 1, S, S], TensorData::F32(x.clone())).expect("x");
    vals.insert(g.inputs[0], xt);
    for nd in &g.nodes {
        let ins: Vec<&Tensor> = nd.inputs.iter().map(|t| &vals[t]).collect();
        let outs = tessera_kernels::eval(&nd.op, &ins)
            .unwrap_or_else(|e| panic!("node '{}': {e}", nd.name));
        for (t, v) in nd.outputs.iter().zip(outs) {
            vals.insert(*t, v);
        }
    }
    let want: Vec<f32> = (0..S * S)
        .map(|k| x[k] + if k % S <= k / S { 0.0 } else { -1e9 })
        .collect();
    for o in &g.outputs {
        let TensorData::F32(got) = &vals[o].data else {
            panic!("a float output");
        };
        assert_eq!(got, &want);
    }
}
