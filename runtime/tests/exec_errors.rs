//! Every validation error names the thing at fault, and a failing rank stops the run
//! instead of hanging it.
mod exec_support;

use exec_support::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tessera_ir::op::{ReshapeAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::plan::{sha256_file, CollectiveKind, Plan, StepKind, ValueId, FORMAT_VERSION};
use tessera_ir::{Op, Tensor, TensorId};
use tessera_runtime::device::DeviceKind;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

fn run_err(plan: &Plan, inputs: &BTreeMap<String, Tensor>) -> String {
    let store = WeightStore::with_dir(".");
    match run_plan(plan, &store, inputs, &RunOptions::default()) {
        Ok(_) => panic!("run_plan succeeded on a bad plan"),
        Err(e) => e.to_string(),
    }
}

/// Runs `f` on a thread and fails the test if it takes more than 30 s (a hang).
fn with_timeout<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("run_plan hung")
}

#[test]
fn a_failing_rank_stops_every_rank() {
    for n in [2, 3, 4, 6] {
        let (mut plan, inputs) = layouts_plan(n);
        // Rank 1's relu becomes a Reshape to an impossible shape: a kernel error on rank 1
        // only, while the other ranks wait in the all-to-all that follows.
        let step = &mut plan.ranks[1].steps[1];
        if let StepKind::Compute { op, .. } = &mut step.kind {
            *op = Op::Reshape(ReshapeAttrs { shape: vec![7] });
        }
        let msg = with_timeout(move || run_err(&plan, &inputs));
        assert!(
            msg.contains("rank 1 step 1") && msg.contains("Reshape") && msg.contains("'relu'"),
            "n={n}: {msg}"
        );
        assert!(
            !msg.contains("aborted"),
            "the root cause must win over peers' aborts: {msg}"
        );
    }
}

#[test]
fn a_rank_failing_after_the_last_collective_is_reported() {
    let (mut plan, inputs) = mlp_plan(3);
    // Rank 2 reads a weight slice beyond the weight's extent.
    if let StepKind::LoadWeight { slice: Some(s), .. } = &mut plan.ranks[2].steps[1].kind {
        s.end = 99;
    }
    let msg = with_timeout(move || run_err(&plan, &inputs));
    assert_mentions(&msg, &["rank 2 step 1", "w1"]);
}

#[test]
fn input_errors_name_the_input() {
    let (plan, inputs) = mlp_plan(2);
    let mut extra = inputs.clone();
    extra.insert("y".into(), Tensor::f32(vec![1], vec![0.0]));
    let only_x = |t: Tensor| BTreeMap::from([("x".to_string(), t)]);
    let cases: [(BTreeMap<String, Tensor>, &[&str]); 4] = [
        (BTreeMap::new(), &["input 'x'", "missing", "[2, 4, 8]"]),
        (extra, &["input 'y'", "not an input"]),
        (
            only_x(Tensor::f32(vec![2, 4, 9], vec![0.0; 72])),
            &["input 'x'", "expected f32[2, 4, 8], got f32[2, 4, 9]"],
        ),
        (
            only_x(Tensor::i64(vec![2, 4, 8], vec![0; 64])),
            &["input 'x'", "got i64[2, 4, 8]"],
        ),
    ];
    for (inputs, parts) in cases {
        assert_mentions(&run_err(&plan, &inputs), parts);
    }
}

#[test]
fn out_of_range_ids_are_rejected() {
    let (plan, inputs) = mlp_plan(2);

    let mut p = plan.clone();
    p.ranks[0].steps[2].inputs[0] = ValueId(999);
    let msg = run_err(&p, &inputs);
    assert_mentions(&msg, &["rank 0 step 2", "value 999 out of range"]);

    let mut p = plan.clone();
    p.values[0].tensor = TensorId(77);
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("value 0 refers to tensor 77"), "{msg}");

    let mut p = plan.clone();
    if let StepKind::Compute { node, .. } = &mut p.ranks[1].steps[3].kind {
        node.0 = 42;
    }
    let msg = run_err(&p, &inputs);
    assert_mentions(&msg, &["rank 1 step 3", "compute node 42 out of range"]);

    let mut p = plan.clone();
    p.graph.outputs[0] = TensorId(500);
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("tensor 500"), "{msg}");

    let mut p = plan.clone();
    p.outputs[0] = ValueId(31);
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("output value 31"), "{msg}");
}

#[test]
fn structural_errors_are_rejected_before_running() {
    let (plan, inputs) = mlp_plan(2);

    // Value read before definition.
    let mut p = plan.clone();
    p.ranks[1].steps.swap(0, 2);
    let msg = run_err(&p, &inputs);
    assert_mentions(&msg, &["rank 1 step 0", "before it is defined"]);

    // Ranks that disagree on the collectives would hang: refuse them.
    let mut p = plan.clone();
    if let StepKind::Collective { collective, .. } = &mut p.ranks[1].steps[6].kind {
        *collective = CollectiveKind::Broadcast;
    }
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("disagree at collective #0"), "{msg}");

    let mut p = plan.clone();
    p.ranks[0].steps.pop();
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("disagree"), "{msg}");

    // Mesh size and rank count must agree.
    let mut p = plan.clone();
    p.mesh.shape = vec![3];
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("3 devices but the plan has 2"), "{msg}");

    // A step whose output shape differs from the plan's value.
    let mut p = plan.clone();
    if let StepKind::Compute { op, .. } = &mut p.ranks[0].steps[3].kind {
        *op = Op::Unary(UnaryAttrs {
            kind: UnaryOp::Relu,
        });
    }
    let out = p.ranks[0].steps[3].outputs[0].index();
    p.values[out].shape = vec![2, 4, 24];
    let msg = run_err(&p, &inputs);
    assert!(
        msg.contains("shape [2, 4, 12], the plan expects [2, 4, 24]"),
        "{msg}"
    );

    // A value whose shape is not a piece of its tensor's.
    p.values[out].shape = vec![1];
    let msg = run_err(&p, &inputs);
    assert_mentions(
        &msg,
        &[
            "tensor 'gelu_out'",
            "[1] on rank 0 is not a piece",
            "[2, 4, 24]",
        ],
    );
    let mut p = plan.clone();
    p.values[out].shape = vec![2, 5, 12];
    let msg = run_err(&p, &inputs);
    assert!(msg.contains("[2, 5, 12] on rank 0 is not a piece"), "{msg}");
}

#[test]
fn ragged_value_shapes_must_cover_every_rank() {
    let (mut plan, inputs) = mlp_plan(2);
    // Per-rank shapes for 3 ranks in a 2-rank plan.
    let v = &mut plan.values[0];
    v.rank_shapes = vec![v.shape.clone(); 3];
    let msg = run_err(&plan, &inputs);
    assert!(
        msg.contains("3 per-rank shapes for 2 tensor-parallel ranks"),
        "{msg}"
    );
}

#[test]
fn newer_format_version_is_refused() {
    let (mut plan, inputs) = mlp_plan(1);
    plan.format_version = FORMAT_VERSION + 1;
    let msg = run_err(&plan, &inputs);
    assert!(
        msg.contains(&format!("format_version {}", FORMAT_VERSION + 1)),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.json");
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert_mentions(&msg, &["future.json", "newer than this Tessera supports"]);
}

#[test]
fn source_model_is_located_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b"pretend onnx bytes").unwrap();
    let plan_path = dir.path().join("plan.json");
    let (mut plan, _) = mlp_plan(1);
    plan.source.path = "model.onnx".into();
    assert_eq!(plan.resolve_source(&plan_path, None), model);
    assert_eq!(
        plan.resolve_source(&plan_path, Some(Path::new("/x/m.onnx"))),
        Path::new("/x/m.onnx")
    );

    // sha256("pretend onnx bytes"), computed independently with sha256sum.
    let actual = sha256_file(&model).unwrap();
    assert_eq!(
        actual,
        "feef0153f4e2ba5a37e4cba5667d33d2cdb8abb81236183a3e10bd38a0d01e90"
    );
    plan.source.sha256 = actual.clone();
    assert_eq!(plan.verify(&plan_path, None).unwrap(), model);

    let wrong = "0".repeat(64);
    plan.source.sha256 = wrong.clone();
    let msg = plan.verify(&plan_path, None).unwrap_err().to_string();
    assert_mentions(&msg, &["model.onnx", &wrong, &actual]);

    let missing = dir.path().join("gone.onnx");
    let msg = plan
        .verify(&plan_path, Some(&missing))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["gone.onnx", "not found"]);
}

#[test]
fn cuda_backend_without_feature_says_how_to_get_it() {
    let (plan, inputs) = mlp_plan(1);
    let store = WeightStore::with_dir(".");
    let opts = RunOptions {
        backend: DeviceKind::Cuda,
    };
    let res = run_plan(&plan, &store, &inputs, &opts);
    if cfg!(feature = "cuda") {
        return;
    }
    let msg = res
        .expect_err("cuda without the feature must fail")
        .to_string();
    assert!(
        msg.contains("CUDA backend not compiled in: rebuild with --features cuda"),
        "{msg}"
    );
}

/// The id of the graph tensor named `name`.
fn tensor_named(plan: &Plan, name: &str) -> TensorId {
    let i = plan
        .graph
        .tensors
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor '{name}'"));
    TensorId(i as u32)
}

#[test]
fn an_inline_tensor_shorter_than_its_shape_is_an_error() {
    let (mut plan, inputs) = mlp_plan(2);
    let w1 = tensor_named(&plan, "w1");
    let w = plan.graph.weights.get_mut(&w1).expect("w1 is a weight");
    if let tessera_ir::WeightData::Inline { tensor } = &mut w.data {
        tensor.data = tessera_ir::TensorData::F32(vec![0.5; 100]);
    }
    let msg = run_err(&plan, &inputs);
    assert_eq!(msg.lines().count(), 1, "one-line error expected: {msg}");
    assert_mentions(
        &msg,
        &[
            "inline tensor 'w1'",
            "has 100 elements, its shape [8, 24] needs 192",
        ],
    );
}

#[test]
fn sizes_over_the_caps_are_errors_before_anything_is_allocated() {
    let (plan, inputs) = mlp_plan(2);
    // A graph tensor expanded to 2^53 elements.
    let mut big = plan.clone();
    let x = tensor_named(&big, "x");
    big.graph.tensors[x.index()].shape = vec![1 << 53];
    let msg = run_err(&big, &inputs);
    assert_mentions(
        &msg,
        &["tensor 'x'", "[9007199254740992] of f32", "over the cap"],
    );
    // A plan value whose element count wraps at 2^62-sized dims.
    let mut wrap = plan.clone();
    wrap.values[0].shape = vec![1 << 62, 1 << 62, 4];
    let msg = run_err(&wrap, &inputs);
    assert_mentions(
        &msg,
        &["value 0 (tensor 'x')", "overflows the element count"],
    );
    // A mesh of more devices than the limit.
    let mut mesh = plan;
    mesh.mesh.shape = vec![1 << 40];
    let msg = run_err(&mesh, &inputs);
    assert_mentions(
        &msg,
        &["mesh [1099511627776]", "over the limit of 4096 devices"],
    );
}

#[test]
fn a_compute_op_over_the_cap_is_refused_before_running() {
    let (mut plan, inputs) = mlp_plan(2);
    // Rank 0's gelu becomes an Expand to 2^53 rows (the plan's values are unchanged).
    if let StepKind::Compute { op, .. } = &mut plan.ranks[0].steps[3].kind {
        *op = Op::Expand(tessera_ir::op::ExpandAttrs {
            shape: vec![1 << 53, 1, 1, 1],
        });
    }
    let msg = run_err(&plan, &inputs);
    assert_mentions(
        &msg,
        &[
            "rank 0 step 3",
            "(Expand)",
            "[9007199254740992, 2, 4, 12] of f32",
            "over the cap",
        ],
    );
}
