//! A plan is only a bridge: its weight entries may name any path, so the runtime reads
//! weights only through the model's folder. A plan edited to read a file outside it (an
//! absolute path, `..`, a link out of the folder) is refused even with the matching sha256
//! recorded.
mod common;

use common::tessera;
use std::path::{Path, PathBuf};
use tessera_ir::plan::{sha256_file, Plan};
use tessera_ir::WeightData;
use tessera_runtime::exec::load::open_plan;

/// `outer/m/mlp.onnx` compiled to `outer/m/p.json`; `outer/other.onnx` a copy beside.
fn compiled(outer: &Path) -> PathBuf {
    let dir = outer.join("m");
    std::fs::create_dir(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/mlp.onnx");
    std::fs::copy(&src, dir.join("mlp.onnx")).unwrap();
    std::fs::copy(&src, outer.join("other.onnx")).unwrap();
    let plan = dir.join("p.json");
    let (code, _, err) = tessera(&[
        "compile",
        dir.join("mlp.onnx").to_str().unwrap(),
        "--devices",
        "2",
        "--shape",
        "x=4x64",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    plan
}

/// Points every file weight of the plan at `location`, recording `actual`'s sha256 for it,
/// as a crafted plan would.
fn redirect(plan_path: &Path, location: &str, actual: &Path) {
    let mut p = Plan::read(plan_path).unwrap();
    for w in p.graph.weights.values_mut() {
        if let WeightData::File { path, .. } = &mut w.data {
            *path = location.into();
        }
    }
    let sha = sha256_file(actual).unwrap();
    p.source.weight_files.insert(location.into(), sha);
    p.write(plan_path).unwrap();
}

#[test]
fn a_plan_cannot_read_weights_outside_the_model_folder() {
    let outer = tempfile::tempdir().unwrap();
    let other = outer.path().join("other.onnx");
    let abs = other.display().to_string();
    let mut cases = vec![
        (abs.clone(), "is absolute"),
        ("../other.onnx".into(), "'..'"),
    ];
    #[cfg(unix)]
    cases.push(("link.onnx".into(), "outside the model's folder"));
    for (location, why) in cases {
        let outer = tempfile::tempdir().unwrap();
        let plan = compiled(outer.path());
        let other = outer.path().join("other.onnx");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&other, outer.path().join("m/link.onnx")).unwrap();
        let location = location.replace(&abs, &other.display().to_string());
        redirect(&plan, &location, &other);
        let e = open_plan(&plan, None).unwrap_err().to_string();
        assert!(e.contains(&location) && e.contains(why), "{e}");
    }
    assert!(open_plan(&compiled(outer.path()), None).is_ok());
}
