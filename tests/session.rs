//! The resident session (`tessera_runtime::session::Session`, opened through the root
//! crate's `tessera::compile` / `tessera::open_session`): outputs equal onnxruntime's
//! recorded outputs on the example models, repeated and concurrent runs reuse the same
//! ranks and give the same bits, bad inputs fail with the input's name and leave the session
//! usable, a cancelled run stops and the next one succeeds, and a saved plan opens again.
mod common;

use common::{max_abs_diff, read_npy, root};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tessera::{compile, open_session, ApiError, CompileOptions, SessionOptions};
use tessera_ir::Tensor;
use tessera_runtime::exec::ExecError;

fn example(name: &str) -> PathBuf {
    root().join("examples/models").join(format!("{name}.onnx"))
}

/// The recorded input `input` of an example, and the options fixing its shape.
fn example_input(
    name: &str,
    input: &str,
    devices: usize,
) -> (BTreeMap<String, Tensor>, CompileOptions) {
    let t = read_npy(&root().join(format!("examples/models/{name}/input_{input}.npy")));
    let mut opts = CompileOptions::new(devices);
    opts.shapes.insert(input.to_string(), t.shape.clone());
    (BTreeMap::from([(input.to_string(), t)]), opts)
}

fn ort(name: &str, output: &str) -> Tensor {
    read_npy(&root().join(format!("examples/models/{name}/ort_output_{output}.npy")))
}

#[test]
fn repeated_runs_match_onnxruntime_with_the_same_bits() {
    for (name, input, output, devices) in [
        ("mlp", "x", "y", 2),
        ("gpt2_4l", "input_ids", "logits", 2),
        ("llama_1l", "input_ids", "logits", 3),
    ] {
        let (inputs, opts) = example_input(name, input, devices);
        let session = compile(&example(name), &opts)
            .and_then(|p| p.session(&SessionOptions::default()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(session.devices(), devices);
        assert_eq!(session.inputs()[0].name, input);
        assert_eq!(session.outputs()[0].name, output);
        let reference = ort(name, output);
        let first = session.run(&inputs).expect("first run");
        let err = max_abs_diff(&first[0], &reference);
        assert!(
            err < 1e-4,
            "{name}: max abs error {err} against onnxruntime"
        );
        for _ in 0..3 {
            let again = session.run(&inputs).expect("repeated run");
            assert_eq!(
                again[0], first[0],
                "{name}: a repeated run changed the bits"
            );
        }
    }
}

#[test]
fn concurrent_callers_queue_and_get_their_outputs() {
    let (inputs, opts) = example_input("mlp", "x", 2);
    let session = Arc::new(
        compile(&example("mlp"), &opts)
            .and_then(|p| p.session(&SessionOptions::default()))
            .expect("session"),
    );
    let expected = session.run(&inputs).expect("run")[0].clone();
    // Each thread feeds a scaled copy (the MLP is not linear, so each output is its own).
    let threads: Vec<_> = (1..=4)
        .map(|k| {
            let session = session.clone();
            let mut x = inputs["x"].clone();
            if let tessera_ir::TensorData::F32(v) = &mut x.data {
                v.iter_mut().for_each(|e| *e *= k as f32);
            }
            std::thread::spawn(move || {
                let feeds = BTreeMap::from([("x".to_string(), x)]);
                let outs: Vec<Tensor> = (0..20)
                    .map(|_| session.run(&feeds).expect("run").remove(0))
                    .collect();
                (k, outs)
            })
        })
        .collect();
    for h in threads {
        let (k, outs) = h.join().expect("thread");
        assert!(
            outs.iter().all(|o| *o == outs[0]),
            "thread {k}: outputs differ"
        );
        if k == 1 {
            assert_eq!(outs[0], expected);
        } else {
            assert_ne!(outs[0], expected, "thread {k} got another caller's output");
        }
    }
}

#[test]
fn bad_inputs_name_the_input_and_leave_the_session_usable() {
    let (inputs, opts) = example_input("mlp", "x", 2);
    let session = compile(&example("mlp"), &opts)
        .and_then(|p| p.session(&SessionOptions::default()))
        .expect("session");
    let x = &inputs["x"];
    let cases: Vec<(BTreeMap<String, Tensor>, &str)> = vec![
        (BTreeMap::new(), "input 'x': missing (expected f32[4, 64])"),
        (
            BTreeMap::from([("x".into(), Tensor::f32(vec![4, 63], vec![0.0; 4 * 63]))]),
            "input 'x': expected f32[4, 64], got f32[4, 63]",
        ),
        (
            BTreeMap::from([("x".into(), Tensor::i64(vec![4, 64], vec![0; 256]))]),
            "input 'x': expected f32[4, 64], got i64[4, 64]",
        ),
        (
            BTreeMap::from([("x".into(), x.clone()), ("z".into(), x.clone())]),
            "input 'z': not an input of the model (its inputs are: x)",
        ),
    ];
    for (feeds, msg) in cases {
        match session.run(&feeds) {
            Err(e @ ExecError::Input { .. }) => assert_eq!(e.to_string(), msg),
            other => panic!("expected an input error '{msg}', got {other:?}"),
        }
    }
    let y = session.run(&inputs).expect("the session still runs");
    assert!(max_abs_diff(&y[0], &ort("mlp", "y")) < 1e-4);
}

#[test]
fn a_cancelled_run_stops_and_the_next_run_succeeds() {
    // Large enough that the ranks are still running when the first poll (20 ms) asks.
    let mut opts = CompileOptions::new(2);
    opts.shapes.insert("input_ids".into(), vec![64, 64]);
    let session = compile(&example("gpt2_4l"), &opts)
        .and_then(|p| p.session(&SessionOptions::default()))
        .expect("session");
    let ids = Tensor::i64(vec![64, 64], (0..64 * 64).map(|i| i % 50).collect());
    let inputs = Arc::new(BTreeMap::from([("input_ids".to_string(), ids)]));
    let mut asked = 0;
    let r = session.run_interruptible(inputs.clone(), &mut || {
        asked += 1;
        true
    });
    assert!(asked >= 1, "the run finished before the first poll");
    assert!(matches!(r, Err(ExecError::Cancelled)), "got {r:?}");
    let (a, _) = session
        .run_shared(inputs.clone())
        .expect("run after a cancelled run");
    let (b, _) = session.run_shared(inputs).expect("second run");
    assert_eq!(a, b);
}

#[test]
fn a_saved_plan_opens_again_and_checks_the_device_count() {
    let (inputs, opts) = example_input("mlp", "x", 2);
    let mut plan = compile(&example("mlp"), &opts).expect("compile");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mlp.plan.json");
    plan.save(&path).expect("save");
    assert!(plan.summary().contains("devices 2"), "{}", plan.summary());
    assert!(plan.to_dot(1).expect("dot").starts_with("digraph"));
    let session = open_session(&path, &CompileOptions::new(2), &SessionOptions::default())
        .expect("open the saved plan");
    let y = session.run(&inputs).expect("run");
    assert!(max_abs_diff(&y[0], &ort("mlp", "y")) < 1e-4);
    match open_session(&path, &CompileOptions::new(3), &SessionOptions::default()) {
        Err(e @ ApiError::Options(_)) => assert_eq!(
            e.to_string(),
            format!(
                "devices=3: plan '{}' was compiled for 2 devices",
                path.display()
            )
        ),
        other => panic!("expected a device-count error, got {other:?}"),
    }
}
