//! The activations (LeakyRelu, PRelu, Elu, Selu, Celu, ThresholdedRelu, Softsign, Mish), the
//! trigonometric and hyperbolic ops (Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh)
//! the reductions (ArgMax, ArgMin, ReduceLogSumExp, ReduceLogSum, ReduceL1) and a written-out
//! Softmax and LogSoftmax (which must become one op each) in the small
//! models of scripts/gen_extra_ops.py, generated with onnxruntime's outputs when the test
//! runs. Each model is compiled with the `tessera` CLI for 1 and 2 devices, run from its plan
//! on CPU devices as `tessera-run` runs it (`open_plan`, then `run_plan`), and compared with
//! onnxruntime: integer outputs exactly, float outputs within 1e-4 of the largest reference
//! magnitude. On 2 devices the elementwise ops must keep the hidden layer's column split and
//! ArgMax / ArgMin over another axis must keep it too. Skipped (with a message) when python3
//! lacks onnx, numpy or onnxruntime.
mod common;

use common::generated::{compile, generate, layouts, run_and_compare};
use tessera_ir::layout::Layout;
use tessera_ir::plan::Plan;
use tessera_ir::Op;

/// Max |tessera − onnxruntime| over max |onnxruntime| of a float output.
const TOLERANCE: f64 = 1e-4;

/// The models the script writes.
const MODELS: [&str; 5] = [
    "activations",
    "trig",
    "reductions",
    "split_reductions",
    "decomposed_softmax",
];

/// On 2 devices: every op between the two MatMuls of the MLPs keeps the column split;
/// ArgMax / ArgMin over axis 1 keep the split of axis 2 (their output axis 1).
fn check_splits(model: &str, plan: &Plan) {
    let nodes = layouts(plan);
    match model {
        "activations" | "trig" => {
            for (op, layout) in &nodes[1..nodes.len() - 1] {
                assert_eq!(
                    *layout,
                    Some(Layout::Split(1)),
                    "{model}: {} lost the column split",
                    op.name()
                );
            }
        }
        "split_reductions" => {
            let args: Vec<_> = nodes
                .iter()
                .filter(|(op, _)| matches!(op, Op::ArgReduce(_)))
                .collect();
            assert_eq!(args.len(), 2, "{model}: ArgMax and ArgMin");
            for (op, layout) in args {
                assert_eq!(*layout, Some(Layout::Split(1)), "{model}: {}", op.name());
            }
        }
        _ => {}
    }
}

/// On any device count: the written-out softmax and log-softmax are one Softmax op each
/// (the canonical rules `softmax` and `log-softmax`), with no Exp left.
fn check_canonical(model: &str, plan: &Plan) {
    if model != "decomposed_softmax" {
        return;
    }
    let ops: Vec<&Op> = plan.graph.nodes.iter().map(|n| &n.op).collect();
    let mut softmax: Vec<(usize, bool)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Softmax(a) => Some((a.axis, a.log)),
            _ => None,
        })
        .collect();
    softmax.sort_unstable();
    assert_eq!(softmax, vec![(1, true), (2, false)], "{model}: {ops:?}");
    assert!(
        !ops.iter().any(|op| op.name() == "Exp"),
        "{model}: an Exp is left: {ops:?}"
    );
}

#[test]
fn extra_ops_match_onnxruntime_on_1_and_2_devices() {
    let tmp = tempfile::tempdir().expect("temp dir");
    if !generate("gen_extra_ops.py", tmp.path()) {
        return;
    }
    for model in MODELS {
        for n in [1, 2] {
            let label = format!("{model} N={n}");
            let plan_path = compile(tmp.path(), model, n);
            let plan = run_and_compare(&plan_path, &tmp.path().join(model), &label, TOLERANCE);
            check_canonical(model, &plan);
            if n == 2 {
                check_splits(model, &plan);
            }
        }
    }
}
