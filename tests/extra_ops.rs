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

use common::{npys, root, sanitize, tessera};
use std::path::Path;
use tessera_ir::layout::Layout;
use tessera_ir::plan::Plan;
use tessera_ir::Op;
use tessera_runtime::exec::load::{open_plan, LoadedPlan};
use tessera_runtime::exec::{run_plan, RunOptions};

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

/// Generates the models into `dir`; false (after saying why) when python3 or its packages
/// are missing.
fn generate(dir: &Path) -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => {
            println!("skipping: python3 with numpy, onnx and onnxruntime is not available");
            return false;
        }
    }
    let out = std::process::Command::new("python3")
        .arg(root().join("scripts/gen_extra_ops.py"))
        .arg(dir)
        .output()
        .expect("run scripts/gen_extra_ops.py");
    assert!(
        out.status.success(),
        "scripts/gen_extra_ops.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Compiles `model` for `n` devices; returns the plan's path.
fn compile(dir: &Path, model: &str, n: usize) -> std::path::PathBuf {
    let onnx = dir.join(format!("{model}.onnx"));
    let plan = dir.join(format!("{model}.n{n}.json"));
    let devices = n.to_string();
    let (code, _, err) = tessera(&[
        "compile",
        onnx.to_str().expect("utf-8 path"),
        "--devices",
        &devices,
        "-o",
        plan.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "{model} N={n}: tessera compile failed: {err}");
    plan
}

/// Runs the plan and compares every output with onnxruntime's.
fn run_and_compare(plan_path: &Path, ref_dir: &Path, label: &str) -> Plan {
    let LoadedPlan { plan, store } = open_plan(plan_path, None).unwrap_or_else(|e| panic!("{e}"));
    let inputs = npys(ref_dir, "input_");
    let (got, _) = run_plan(&plan, &store, &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{label}: run: {e}"));
    let want = npys(ref_dir, "ort_output_");
    assert_eq!(got.len(), want.len(), "{label}: output count");
    for (t, value) in plan.graph.outputs.iter().zip(&got) {
        let name = &plan.graph.tensor(*t).name;
        let reference = &want[&sanitize(name)];
        assert_eq!(value.shape, reference.shape, "{label}: {name}: shape");
        if !reference.dtype.is_float() {
            assert_eq!(value.dtype, reference.dtype, "{label}: {name}: dtype");
            assert_eq!(
                value.to_i64_vec(),
                reference.to_i64_vec(),
                "{label}: {name}"
            );
            println!(
                "{label}: {name}: {} indices equal",
                reference.to_i64_vec().len()
            );
            continue;
        }
        let (a, b) = (value.to_f64_vec(), reference.to_f64_vec());
        let scale = b.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        println!("{label}: {name}: max abs diff {diff:.3e} (max |ref| {scale:.3e})");
        assert!(
            diff <= TOLERANCE * scale && a.iter().all(|x| x.is_finite()),
            "{label}: {name} differs from onnxruntime by {diff:e} (max |ref| {scale:e})"
        );
    }
    plan
}

/// The layout of each node's first output, with the node's op.
fn layouts(plan: &Plan) -> Vec<(&Op, Option<Layout>)> {
    plan.graph
        .nodes
        .iter()
        .map(|n| (&n.op, plan.layouts[n.outputs[0].index()]))
        .collect()
}

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
    if !generate(tmp.path()) {
        return;
    }
    for model in MODELS {
        for n in [1, 2] {
            let label = format!("{model} N={n}");
            let plan_path = compile(tmp.path(), model, n);
            let plan = run_and_compare(&plan_path, &tmp.path().join(model), &label);
            check_canonical(model, &plan);
            if n == 2 {
                check_splits(model, &plan);
            }
        }
    }
}
