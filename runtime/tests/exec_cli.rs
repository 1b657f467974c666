//! The `tessera-run` binary end to end on a hand-built plan.
mod exec_support;

use exec_support::*;
use std::path::Path;
use std::process::{Command, Output};
use tessera_ir::plan::{sha256_file, Plan};
use tessera_runtime::npy::{read_npy, write_npy};

fn tessera_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-run"))
        .args(args)
        .output()
        .expect("spawn tessera-run")
}

/// Writes model.onnx (placeholder bytes; the MLP's weights are inline), plan.json and x.npy.
fn setup(dir: &Path, n: usize) -> Plan {
    let (mut plan, inputs) = mlp_plan(n);
    let model = dir.join("model.onnx");
    std::fs::write(&model, b"weights are inline in this plan").unwrap();
    plan.source.path = "model.onnx".into();
    plan.source.sha256 = sha256_file(&model).unwrap();
    std::fs::write(
        dir.join("plan.json"),
        serde_json::to_string_pretty(&plan).unwrap(),
    )
    .unwrap();
    write_npy(&dir.join("x.npy"), &inputs["x"]).unwrap();
    plan
}

/// A temporary folder `setup` for 2 devices, with its plan path and the `x=` input argument.
struct TwoDeviceRun {
    dir: tempfile::TempDir,
    plan: String,
    input: String,
}

/// Sets up a temporary folder for a 2-device run.
fn two_device_run() -> TwoDeviceRun {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), 2);
    let d = dir.path().to_str().unwrap();
    let plan = format!("{d}/plan.json");
    let input = format!("x={d}/x.npy");
    TwoDeviceRun { dir, plan, input }
}

/// Runs `tessera-run` with `args`, expecting a user error: status 1 and a one-line message,
/// which it returns.
fn user_error(args: &[&str]) -> String {
    let out = tessera_run(args);
    assert_eq!(out.status.code(), Some(1));
    stderr_line(&out)
}

fn stderr_line(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        s.trim_end().lines().count(),
        1,
        "one-line error expected, got: {s}"
    );
    s
}

#[test]
fn runs_checks_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let plan = setup(dir.path(), 3);
    let d = dir.path().to_str().unwrap();
    let out = tessera_run(&[
        &format!("{d}/plan.json"),
        "--input",
        &format!("x={d}/x.npy"),
        "--output",
        &format!("{d}/out"),
        "--check",
        "--stats",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("check passed: 1 output(s) match"),
        "{stdout}"
    );
    assert!(stdout.contains("peak_live_bytes"), "{stdout}");
    let y = read_npy(&dir.path().join("out/fc2_out.npy")).unwrap();
    let mut inputs = std::collections::BTreeMap::new();
    inputs.insert(
        "x".to_string(),
        read_npy(&dir.path().join("x.npy")).unwrap(),
    );
    let want = reference(&plan, &inputs);
    assert!(rel_err(&y, &want[0]) <= 1e-5);
}

#[test]
fn user_errors_are_one_line_with_status_1() {
    let TwoDeviceRun {
        dir,
        plan,
        input: x,
    } = two_device_run();
    let d = dir.path().to_str().unwrap();

    let e = user_error(&[&plan, "--input", &format!("z={d}/x.npy")]);
    assert!(e.contains("input 'z'"), "{e}");

    assert!(user_error(&[&plan]).contains("input 'x': missing"));

    assert!(user_error(&[&plan, "--input", &format!("x={d}/nope.npy")]).contains("nope.npy"));

    // Wrong source model: sha mismatch names both hashes.
    std::fs::write(dir.path().join("other.onnx"), b"different").unwrap();
    let e = user_error(&[&plan, "--input", &x, "--model", &format!("{d}/other.onnx")]);
    assert!(
        e.contains("other.onnx") && e.contains("sha256") && e.matches("sha256 ").count() == 2,
        "{e}"
    );

    // Missing source model.
    std::fs::remove_file(dir.path().join("model.onnx")).unwrap();
    let e = user_error(&[&plan, "--input", &x]);
    assert!(e.contains("model.onnx") && e.contains("not found"), "{e}");

    // Truncated plan.
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, &text[..100]).unwrap();
    let e = user_error(&[&plan, "--input", &x]);
    assert!(
        e.contains("plan.json") && e.contains("line") && e.contains("column"),
        "{e}"
    );
}

#[test]
fn check_failure_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = setup(dir.path(), 2);
    // Drop the all-reduce: rank 0's partial sum is returned as the output, which is wrong.
    for prog in &mut plan.ranks {
        let last = prog.steps.pop().unwrap();
        prog.steps.last_mut().unwrap().outputs = last.outputs.clone();
    }
    plan.collectives.clear();
    let d = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("plan.json"),
        serde_json::to_string(&plan).unwrap(),
    )
    .unwrap();
    let out = tessera_run(&[
        &format!("{d}/plan.json"),
        "--input",
        &format!("x={d}/x.npy"),
        "--check",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL 'fc2_out'"));
}

#[test]
fn one_process_per_device_needs_cuda_and_names_what_is_missing() {
    let TwoDeviceRun {
        dir: _dir,
        plan,
        input,
    } = two_device_run();
    let cuda_run = |nproc: &str| {
        tessera_run(&[
            &plan,
            "--input",
            &input,
            "--backend",
            "cuda",
            "--nproc",
            nproc,
        ])
    };
    // --nproc on the CPU backend is a usage error.
    let out = tessera_run(&[&plan, "--input", &input, "--nproc", "2"]);
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("--backend cuda"));
    // A device count that is not the plan's.
    let out = cuda_run("3");
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("compiled for 2 devices"));
    // On a machine without CUDA (or a build without the feature) every rank fails with a
    // clear reason and the launcher stops the others: non-zero exit, no hang, no panic.
    if tessera_runtime::multiproc::role(None) == tessera_runtime::multiproc::ProcessRole::InProcess
    {
        let out = cuda_run("2");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            println!("a CUDA device is present: the 2-process run succeeded");
        } else {
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                err.contains("CUDA") || err.contains("cuda"),
                "the error names CUDA: {err}"
            );
        }
    }
}

#[test]
fn repeat_is_bounded() {
    let run = two_device_run();
    for k in ["18446744073709551615", "1000001"] {
        let out = tessera_run(&[&run.plan, "--input", &run.input, "--repeat", k]);
        assert_eq!(out.status.code(), Some(2), "clap usage error expected");
        let s = String::from_utf8_lossy(&out.stderr);
        assert!(
            s.contains(&format!("invalid value '{k}' for '--repeat <K>'"))
                && s.contains("is not in 0..=1000000"),
            "{s}"
        );
    }
    let out = tessera_run(&[&run.plan, "--input", &run.input, "--repeat", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
