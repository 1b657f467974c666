//! `tessera-run --input NAME=FIFO` is refused ("not a regular file") instead of blocking
//! forever on the open.
#![cfg(unix)]
mod exec_support;
#[path = "../../tests/shared/fifo.rs"]
mod fifo;

use exec_support::*;
use fifo::{mkfifo, within};
use tessera_ir::plan::sha256_file;

#[test]
fn a_fifo_input_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut plan, _) = mlp_plan(2);
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b"weights are inline in this plan").unwrap();
    plan.source.path = "model.onnx".into();
    plan.source.sha256 = sha256_file(&model).unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    let fifo = dir.path().join("x.npy");
    mkfifo(&fifo);
    let out = within(60, "tessera-run", move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tessera-run"))
            .arg(&plan_path)
            .arg("--input")
            .arg(format!("x={}", fifo.display()))
            .output()
    })
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("x.npy") && err.contains("not a regular file"),
        "{err}"
    );
}
