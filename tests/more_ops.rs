//! The ops added after the extra op set (TopK, ScatterElements, ScatterND, OneHot, Hardmax,
//! EyeLike, LpNormalization, MeanVarianceNormalization, Shrink, LRN, the bitwise ops and
//! BitShift) in the small models of scripts/gen_more_ops.py, generated with onnxruntime's
//! outputs when the test runs. Each model is compiled with the `tessera` CLI for 1 and 2
//! devices, run from its plan on CPU devices as `tessera-run` runs it, and compared with
//! onnxruntime: integer outputs (TopK's indices, the bitwise ops) exactly, float outputs
//! within 1e-4 of the largest reference magnitude. On 2 devices TopK, Hardmax and the
//! reductions of LpNormalization / MeanVarianceNormalization over other axes must keep the
//! column split of the MatMul before them. Skipped (with a message) when python3 lacks onnx,
//! numpy or onnxruntime.
mod common;

use common::generated::{compile, generate, layouts, run_and_compare};
use tessera_ir::layout::Layout;
use tessera_ir::plan::Plan;
use tessera_ir::Op;

/// Max |tessera − onnxruntime| over max |onnxruntime| of a float output.
const TOLERANCE: f64 = 1e-4;

/// The models the script writes.
const MODELS: [&str; 6] = [
    "topk",
    "scatter",
    "one_hot",
    "norms",
    "split_norms",
    "bitwise",
];

/// On 2 devices: TopK over axis 1 of `h[8, 16, 512]` keeps the split of axis 2 (both
/// outputs); Hardmax over axis 0 of `h[16, 128]` keeps its column split (ArgMax through the
/// Cast of the comparison); the reductions of LpNormalization over axis 1 and of
/// MeanVarianceNormalization over axes 0 and 1 of `h[8, 16, 512]` keep the split of axis 2.
/// The scatters run replicated (their spec says so) and only need to be right.
fn check_splits(model: &str, plan: &Plan) {
    let nodes = layouts(plan);
    if model == "one_hot" {
        for (op, layout) in &nodes {
            if matches!(op, Op::ArgReduce(a) if a.axis == 0) || matches!(op, Op::Cast(_)) {
                assert_eq!(*layout, Some(Layout::Split(1)), "{model}: {}", op.name());
            }
        }
    }
    if model == "split_norms" {
        let kept: Vec<_> = nodes
            .iter()
            .filter(|(op, _)| matches!(op, Op::Reduce(r) if r.keepdims))
            .collect();
        assert_eq!(kept.len(), 3, "{model}: ReduceL2 and two ReduceMeans");
        for (op, layout) in kept {
            assert_eq!(*layout, Some(Layout::Split(2)), "{model}: {}", op.name());
        }
    }
    if model == "topk" {
        let split: Vec<_> = layouts(plan)
            .into_iter()
            .filter(|(op, _)| matches!(op, Op::TopK(a) if a.axis == 1))
            .collect();
        assert_eq!(split.len(), 1, "{model}: one TopK over axis 1");
        assert_eq!(
            split[0].1,
            Some(Layout::Split(2)),
            "{model}: TopK lost the split"
        );
        let node = plan
            .graph
            .nodes
            .iter()
            .find(|n| matches!(&n.op, Op::TopK(a) if a.axis == 1))
            .expect("the TopK node");
        assert_eq!(
            plan.layouts[node.outputs[1].index()],
            Some(Layout::Split(2)),
            "{model}: TopK's indices lost the split"
        );
    }
}

#[test]
fn more_ops_match_onnxruntime_on_1_and_2_devices() {
    let tmp = tempfile::tempdir().expect("temp dir");
    if !generate("gen_more_ops.py", tmp.path()) {
        return;
    }
    for model in MODELS {
        for n in [1, 2] {
            let label = format!("{model} N={n}");
            let plan_path = compile(tmp.path(), model, n);
            let plan = run_and_compare(&plan_path, &tmp.path().join(model), &label, TOLERANCE);
            if n == 2 {
                check_splits(model, &plan);
            }
        }
    }
}
