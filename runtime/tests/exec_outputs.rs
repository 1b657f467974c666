//! What `tessera-run` writes and refuses, found by the adversarial campaign
//! (scripts/campaign.py, issue 13): outputs whose names map to one file name are kept
//! apart, an output is never written through a link, into a FIFO or over one of the
//! plan's inputs, a usage error is one line, and the default memory cap follows
//! `ulimit -v`.
mod exec_support;

use exec_support::*;
use std::path::Path;
use std::process::{Command, Output};
use tessera_ir::op::{ExpandAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::plan::{sha256_file, Plan};
use tessera_ir::{DType, Graph, Op, Tensor, TensorData, TensorKind};
use tessera_runtime::exec::memory::ENV_CAP;
use tessera_runtime::npy::{read_npy, write_npy};

fn tessera_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-run"))
        .args(args)
        .env_remove(ENV_CAP)
        .output()
        .expect("spawn tessera-run")
}

/// The one stderr line of a failed run with status `code`.
fn error_line(out: &Output, code: i32) -> String {
    let s = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{s}");
    assert_eq!(s.trim_end().lines().count(), 1, "one line expected: {s}");
    assert!(!s.contains("panicked"), "{s}");
    s
}

/// Writes `plan` (its source model: `model` in `dir`, placeholder bytes, weights inline)
/// as plan.json and `x` as x.npy; returns the plan path and the `x=` argument.
fn write_plan(dir: &Path, mut plan: Plan, model: &str, x: &Tensor) -> (String, String) {
    let model = dir.join(model);
    std::fs::write(&model, b"weights are inline in this plan").unwrap();
    plan.source.path = model.file_name().unwrap().to_str().unwrap().into();
    plan.source.sha256 = sha256_file(&model).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(&path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    write_npy(&dir.join("x.npy"), x).unwrap();
    let d = dir.to_str().unwrap();
    (format!("{d}/plan.json"), format!("x={d}/x.npy"))
}

/// x[4] → Identity → output `names[0]`, x → Neg → output `names[1]`.
fn two_output_plan(names: [&str; 2]) -> Plan {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![4]);
    for (name, kind) in names.iter().zip([UnaryOp::Identity, UnaryOp::Neg]) {
        let out = g.add_tensor(*name, DType::F32, vec![4], TensorKind::Activation);
        g.add_node(
            format!("n_{name}"),
            Op::Unary(UnaryAttrs { kind }),
            vec![x],
            vec![out],
        );
        g.outputs.push(out);
    }
    single_rank_plan(g)
}

fn x4() -> Tensor {
    Tensor::new(
        DType::F32,
        vec![4],
        TensorData::F32(vec![1.0, -2.0, 3.0, -4.0]),
    )
    .unwrap()
}

#[test]
fn outputs_whose_file_names_collide_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, x) = write_plan(dir.path(), two_output_plan(["a/b", "a:b"]), "m.onnx", &x4());
    let out = dir.path().join("out");
    let run = tessera_run(&[&plan, "--input", &x, "-o", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let first = read_npy(&out.join("a_b.npy")).unwrap();
    let second = read_npy(&out.join("a_b_2.npy")).unwrap();
    assert_eq!(first.data, TensorData::F32(vec![1.0, -2.0, 3.0, -4.0]));
    assert_eq!(second.data, TensorData::F32(vec![-1.0, 2.0, -3.0, 4.0]));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("output 'a:b'") && stdout.contains("a_b_2.npy"),
        "{stdout}"
    );
}

#[cfg(unix)]
#[test]
fn an_output_is_never_written_through_a_link_or_into_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, x) = write_plan(dir.path(), two_output_plan(["y", "z"]), "m.onnx", &x4());
    let outside = dir.path().join("outside.bin");
    std::fs::write(&outside, b"not yours").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("y.npy")).unwrap();
    let run = tessera_run(&[&plan, "--input", &x, "-o", out.to_str().unwrap()]);
    let msg = error_line(&run, 1);
    assert_mentions(
        &msg,
        &["y.npy", "not a regular file (it is a symbolic link)"],
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");

    std::fs::remove_file(out.join("y.npy")).unwrap();
    let fifo = Command::new("mkfifo").arg(out.join("y.npy")).status();
    assert!(fifo.unwrap().success());
    // A FIFO opened for writing blocks until a reader comes: the refusal must be at once.
    let (done, result) = std::sync::mpsc::channel();
    let args = [
        plan.clone(),
        "--input".into(),
        x,
        "-o".into(),
        out.to_str().unwrap().into(),
    ];
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        done.send(tessera_run(&args)).ok()
    });
    let run = result
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("tessera-run hung on an output FIFO");
    assert_mentions(&error_line(&run, 1), &["y.npy", "it is a FIFO"]);
}

#[test]
fn an_output_never_replaces_the_plans_source_model() {
    let dir = tempfile::tempdir().unwrap();
    // The source model is named like the output file tessera-run would write.
    let (plan, x) = write_plan(dir.path(), two_output_plan(["y", "z"]), "y.npy", &x4());
    let before = std::fs::read(dir.path().join("y.npy")).unwrap();
    let run = tessera_run(&[&plan, "--input", &x, "-o", dir.path().to_str().unwrap()]);
    assert_mentions(
        &error_line(&run, 1),
        &["cannot write output", "y.npy", "source model"],
    );
    assert_eq!(std::fs::read(dir.path().join("y.npy")).unwrap(), before);
}

#[test]
fn a_usage_error_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, x) = write_plan(dir.path(), two_output_plan(["y", "z"]), "m.onnx", &x4());
    let run = tessera_run(&[&plan, "--input", &x, "--repeat", "18446744073709551615"]);
    assert_mentions(
        &error_line(&run, 2),
        &["tessera-run: invalid value '18446744073709551615' for '--repeat <K>'"],
    );
    let run = tessera_run(&[&plan, "--no-such-flag"]);
    assert_mentions(&error_line(&run, 2), &["--no-such-flag"]);
}

/// x[1] expanded to 2^30 floats (4 GiB): under `ulimit -v` of 3 GiB and no
/// TESSERA_MAX_PLANNED_BYTES, the run is refused by the planned-memory check instead of
/// aborting on the allocation.
#[cfg(target_os = "linux")]
#[test]
fn the_default_memory_cap_follows_ulimit_v() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![1]);
    let big = vec![1usize << 30];
    let y = g.add_tensor("big", DType::F32, big.clone(), TensorKind::Activation);
    g.add_node(
        "expand",
        Op::Expand(ExpandAttrs { shape: big }),
        vec![x],
        vec![y],
    );
    g.outputs.push(y);
    let one = Tensor::new(DType::F32, vec![1], TensorData::F32(vec![1.0])).unwrap();
    let (plan, x) = write_plan(dir.path(), single_rank_plan(g), "m.onnx", &one);
    let limit_kb = 3u64 << 20;
    let run = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {limit_kb} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tessera-run"))
        .args([plan.as_str(), "--input", &x])
        .env_remove(ENV_CAP)
        .output()
        .unwrap();
    let msg = error_line(&run, 1);
    assert_mentions(
        &msg,
        &[
            "allocating tensor 'big'",
            &format!("over the cap of {}", limit_kb * 1024),
        ],
    );
}
