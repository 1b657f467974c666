//! The fusion pass's Conv epilogues: a Conv followed by a per-channel `Mul` / `Add` (an
//! unfolded BatchNormalization), a residual `Add` and/or an activation (Relu, Clip,
//! HardSwish, SiLU as one op or spelled `x·Sigmoid(x)`) runs as one kernel, equal bit for
//! bit to the reference executor's op-by-op run; a Conv whose output is read elsewhere
//! keeps it. (These run the Convs on the im2col path, `TESSERA_DIRECT_CONV=0`, whose sums
//! the reference executor's Conv shares; the direct kernel over packed weights is tested in
//! `exec_fusion_conv_packed.rs`.)
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use tessera_ir::op::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorId};
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

/// Runs the graph as a one-device plan, checks it equals the reference executor bit for bit
/// and returns the fused kernels it ran (by kind) and the plan steps they replaced.
fn run(g: Graph, inputs: &BTreeMap<String, Tensor>) -> (BTreeMap<&'static str, usize>, usize) {
    // Every test of this binary sets the same value.
    std::env::set_var("TESSERA_DIRECT_CONV", "0");
    let plan = single_rank_plan(g);
    let want = reference(&plan, inputs);
    let (got, stats) = run_plan(
        &plan,
        &WeightStore::with_dir("."),
        inputs,
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("run_plan: {e}"));
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a.shape, b.shape);
        let bits =
            |t: &Tensor| -> Vec<u32> { t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(a), bits(b), "fused run differs from the reference");
    }
    (stats.ranks[0].fused.clone(), stats.ranks[0].fused_steps)
}

/// A 3×3 Conv (padding 1, bias) of `x` `[n, c, h, w]` to `m` channels in `group` groups.
fn conv(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    xs: [usize; 4],
    m: usize,
    group: usize,
) -> TensorId {
    let w = inline_weight(
        g,
        &format!("{name}_w"),
        rand_f32(&[m, xs[1] / group, 3, 3], 11),
    );
    let b = inline_weight(g, &format!("{name}_b"), rand_f32(&[m], 12));
    let attrs = ConvAttrs {
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1; 4],
        group,
        depthwise: false,
    };
    f32_node(
        g,
        name,
        Op::Conv(attrs),
        vec![x, w, b],
        vec![xs[0], m, xs[2], xs[3]],
    )
}

fn unary(g: &mut Graph, name: &str, kind: UnaryOp, x: TensorId, s: &[usize]) -> TensorId {
    f32_node(g, name, Op::Unary(UnaryAttrs { kind }), vec![x], s.to_vec())
}

fn inputs(named: &[(&str, &[usize])]) -> BTreeMap<String, Tensor> {
    named
        .iter()
        .enumerate()
        .map(|(i, (n, s))| (n.to_string(), rand_f32(s, 100 + i as u64)))
        .collect()
}

/// ResNet's block tail, `Relu(Conv(x) + skip)`, with the skip added on either side.
#[test]
fn conv_residual_relu_fuses() {
    for skip_first in [false, true] {
        let xs = [2, 4, 9, 9];
        let ys = [2, 6, 9, 9];
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, xs.to_vec());
        let skip = g.add_input("skip", DType::F32, ys.to_vec());
        let y = conv(&mut g, "conv", x, xs, 6, 2);
        let pair = if skip_first { [skip, y] } else { [y, skip] };
        let s = binary_node(&mut g, "add", BinaryOp::Add, pair, ys.to_vec());
        let out = unary(&mut g, "relu", UnaryOp::Relu, s, &ys);
        g.outputs.push(out);
        let ins = inputs(&[("x", &xs), ("skip", &ys)]);
        let (fused, steps) = run(g, &ins);
        assert_eq!(fused, BTreeMap::from([("fused Conv+Add+Act", 1)]));
        assert_eq!(steps, 3);
    }
}

/// MobileNet-V3's depthwise Conv + HardSwish, a Conv + ReLU6 (`Clip(0, 6)`) and
/// EfficientNet's SiLU spelled as `y · Sigmoid(y)`, in one chain.
#[test]
fn conv_activations_fuse_by_semantics() {
    let xs = [2, 8, 6, 6];
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, xs.to_vec());
    let dw = conv(&mut g, "dw", x, xs, 8, 8);
    let hs = HardSigmoidAttrs {
        alpha: 1.0 / 6.0,
        beta: 0.5,
        swish: true,
    };
    let a = f32_node(&mut g, "hswish", Op::HardSigmoid(hs), vec![dw], xs.to_vec());
    let c = conv(&mut g, "c1", a, xs, 8, 1);
    let clip = ClipAttrs {
        min: Some(0.0),
        max: Some(6.0),
    };
    let r6 = f32_node(&mut g, "relu6", Op::Clip(clip), vec![c], xs.to_vec());
    let c2 = conv(&mut g, "c2", r6, xs, 8, 4);
    let sg = unary(&mut g, "sig", UnaryOp::Sigmoid, c2, &xs);
    let out = binary_node(&mut g, "silu", BinaryOp::Mul, [sg, c2], xs.to_vec());
    g.outputs.push(out);
    let (fused, steps) = run(g, &inputs(&[("x", &xs)]));
    assert_eq!(fused, BTreeMap::from([("fused Conv+Act", 3)]));
    assert_eq!(steps, 7, "three Convs, HardSwish, Clip, Sigmoid and Mul");
}

/// A Conv output that is also a graph output, or read by a second op, stays a tensor: the
/// activation after it runs unfused.
#[test]
fn conv_outputs_read_elsewhere_are_not_fused_away() {
    let xs = [1, 4, 5, 5];
    for second_reader in [false, true] {
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, xs.to_vec());
        let y = conv(&mut g, "conv", x, xs, 4, 1);
        let out = unary(&mut g, "relu", UnaryOp::Relu, y, &xs);
        g.outputs.push(out);
        if second_reader {
            let t = unary(&mut g, "tanh", UnaryOp::Tanh, y, &xs);
            g.outputs.push(t);
        } else {
            g.outputs.push(y);
        }
        let (fused, steps) = run(g, &inputs(&[("x", &xs)]));
        assert_eq!((fused, steps), (BTreeMap::new(), 0));
    }
}

/// An addend that broadcasts is not a residual: a per-channel `[1, C, 1, 1]` one is the
/// epilogue's shift, one over the spatial axes (`[1, 1, H, W]`) or per image (`[N, 1, 1, 1]`)
/// is neither, so the Conv keeps its output and the Add + Relu become an elementwise tree.
#[test]
fn broadcast_addends_are_shifts_or_not_fused() {
    let xs = [2, 4, 5, 5];
    for (cs, fused_as) in [
        ([1, 4, 1, 1], "fused Conv+Affine+Act"),
        ([1, 1, 5, 5], "fused Elementwise"),
        ([2, 1, 1, 1], "fused Elementwise"),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, xs.to_vec());
        let c = g.add_input("c", DType::F32, cs.to_vec());
        let y = conv(&mut g, "conv", x, xs, 4, 1);
        let s = binary_node(&mut g, "add", BinaryOp::Add, [y, c], xs.to_vec());
        let out = unary(&mut g, "relu", UnaryOp::Relu, s, &xs);
        g.outputs.push(out);
        let (fused, _) = run(g, &inputs(&[("x", &xs), ("c", &cs)]));
        assert_eq!(fused, BTreeMap::from([(fused_as, 1)]), "{cs:?}");
    }
}

/// An inference BatchNormalization as the importer lowers it (`y·s + t`, s and t `[C, 1, 1]`
/// weights), then optionally a residual, then Relu; the factor on either side of the Mul.
#[test]
fn conv_batch_norm_residual_relu_fuses() {
    for (scale_first, with_skip) in [(false, false), (true, false), (false, true)] {
        let xs = [2, 4, 6, 6];
        let ys = [2, 6, 6, 6];
        let mut g = Graph::new();
        let x = g.add_input("x", DType::F32, xs.to_vec());
        let skip = g.add_input("skip", DType::F32, ys.to_vec());
        let s = inline_weight(&mut g, "bn_s", rand_f32(&[6, 1, 1], 21));
        let t = inline_weight(&mut g, "bn_t", rand_f32(&[6, 1, 1], 22));
        let y = conv(&mut g, "conv", x, xs, 6, 1);
        let pair = if scale_first { [s, y] } else { [y, s] };
        let ys_ = ys.to_vec();
        let m = binary_node(&mut g, "bn_mul", BinaryOp::Mul, pair, ys_.clone());
        let mut z = binary_node(&mut g, "bn_add", BinaryOp::Add, [m, t], ys_.clone());
        if with_skip {
            z = binary_node(&mut g, "skip_add", BinaryOp::Add, [z, skip], ys_);
        }
        let out = unary(&mut g, "relu", UnaryOp::Relu, z, &ys);
        g.outputs.push(out);
        let (fused, steps) = run(g, &inputs(&[("x", &xs), ("skip", &ys)]));
        let (name, n) = match with_skip {
            true => ("fused Conv+Affine+Add+Act", 5),
            false => ("fused Conv+Affine+Act", 4),
        };
        assert_eq!((fused, steps), (BTreeMap::from([(name, 1)]), n));
    }
}
