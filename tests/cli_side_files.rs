//! The timings sidecar of `tessera compile -o PLAN`: written only when PLAN is a regular
//! file (`-o /dev/null` writes no `/dev/null.timings.json`), never through a symbolic link
//! (a link at the sidecar path is replaced, its target untouched) and never over one of
//! the plan's inputs; and `tessera dot -o` never overwrites what it draws.
mod common;
#[cfg(unix)]
#[path = "shared/fifo.rs"]
mod fifo;

use common::tessera;
use std::path::{Path, PathBuf};

fn mlp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp.onnx")
}

fn compile(model: &Path, out: &Path) -> (i32, String, String) {
    tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--devices",
        "2",
        "--shape",
        "x=4x64",
        "-o",
        out.to_str().unwrap(),
    ])
}

#[cfg(unix)]
#[test]
fn a_plan_to_dev_null_writes_no_timings() {
    let (code, out, err) = compile(&mlp(), Path::new("/dev/null"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no timings file"), "{out}");
    assert!(!Path::new("/dev/null.timings.json").exists());
}

#[cfg(unix)]
#[test]
fn a_link_at_the_timings_path_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let sidecar = dir.path().join("p.timings.json");
    std::os::unix::fs::symlink(&victim, &sidecar).unwrap();
    let (code, _, err) = compile(&mlp(), &dir.path().join("p.json"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let meta = std::fs::symlink_metadata(&sidecar).unwrap();
    assert!(meta.file_type().is_file(), "{meta:?}");
    assert!(std::fs::read_to_string(&sidecar)
        .unwrap()
        .contains("compile_ms"));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[cfg(unix)]
#[test]
fn the_timings_file_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(mlp(), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    std::os::unix::fs::symlink(&model, dir.path().join("p.timings.json")).unwrap();
    let plan = dir.path().join("p.json");
    let (code, _, err) = compile(&model, &plan);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write timings") && err.contains("source model"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    assert!(!plan.exists(), "the plan was written before the refusal");
}

#[cfg(unix)]
#[test]
fn a_fifo_input_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("m.onnx");
    fifo::mkfifo(&fifo);
    let out = dir.path().join("p.json");
    let (code, _, err) = fifo::within(60, "tessera compile", move || compile(&fifo, &out));
    assert_ne!(code, 0);
    assert!(
        err.contains("m.onnx") && err.contains("not a regular file"),
        "{err}"
    );
}

/// `tessera dot FILE -o OUT` never replaces what it draws: the model, the plan, or the
/// plan's model (found by scripts/campaign.py: each was overwritten with DOT text).
#[test]
fn dot_never_overwrites_what_it_draws() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.onnx");
    std::fs::copy(mlp(), &model).unwrap();
    let plan = dir.path().join("plan.json");
    let (code, _, err) = compile(&model, &plan);
    assert_eq!(code, 0, "{err}");
    let before = [&model, &plan].map(|p| std::fs::read(p).unwrap());
    let (m, p) = (model.to_str().unwrap(), plan.to_str().unwrap());
    for (args, needle) in [
        (
            vec!["dot", m, "--shape", "x=4x64", "-o", m],
            "it is the model being drawn",
        ),
        (vec!["dot", p, "-o", p], "it is the plan being drawn"),
        (vec!["dot", p, "-o", m], "it is the plan's source model"),
    ] {
        let (code, _, err) = tessera(&args);
        assert_eq!(code, 1, "tessera {args:?} should fail: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("cannot write") && err.contains(needle),
            "{err}"
        );
    }
    assert_eq!([&model, &plan].map(|p| std::fs::read(p).unwrap()), before);
    let out = dir.path().join("plan.dot");
    let (code, _, err) = tessera(&["dot", p, "-o", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("digraph"));
}
