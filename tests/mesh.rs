//! Data × tensor meshes: every example model (and the zoo's BERT, when `.cache/zoo` holds it)
//! is compiled with the `tessera` CLI for `--mesh 2x2`, `2x4` and `4x2` at batch 8, run from
//! its plan on D×T CPU devices as `tessera-run` runs it (`open_plan`, then `run_plan`), and
//! compared with onnxruntime's outputs on the same batch (tests/data/mesh, recorded by
//! scripts/gen_mesh_refs.py; max abs ≤ 1e-4), as is the reference executor's run per group
//! that `tessera-run --check` compares with. Each plan must be the `1xT` plan of batch 8 / D
//! repeated over the D groups: the same collectives per rank, every collective inside its
//! group, none across the data axis. Then the errors: a batch that does not divide, a mesh
//! over the device limit, and plans whose mesh is inconsistent (a read plan is untrusted).
mod common;

use common::{max_abs_diff, read_npy, root, sanitize, tessera};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_compiler::report::PlanReport;
use tessera_ir::plan::{Plan, StepKind};
use tessera_ir::Tensor;
use tessera_runtime::exec::data::reference_outputs;
use tessera_runtime::exec::load::open_plan;
use tessera_runtime::exec::{run_plan, RunOptions};

const MESHES: [(usize, usize); 3] = [(2, 2), (2, 4), (4, 2)];
const ORT_TOLERANCE: f64 = 1e-4;

/// A fresh scratch directory for this test process.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-mesh-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// The recorded inputs (`input_<name>.npy`) of `dir`.
fn inputs(dir: &Path) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        let f = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        if let Some(name) = f
            .strip_prefix("input_")
            .and_then(|f| f.strip_suffix(".npy"))
        {
            out.insert(name.to_string(), read_npy(&p));
        }
    }
    out
}

/// `--shape` of the inputs with their batch divided by `d`.
fn shape_arg(inputs: &BTreeMap<String, Tensor>, d: usize) -> String {
    let spec: Vec<String> = inputs
        .iter()
        .map(|(k, t)| {
            let mut s = t.shape.clone();
            s[0] /= d;
            let dims: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            format!("{k}={}", dims.join("x"))
        })
        .collect();
    spec.join(",")
}

/// Compiles `model` with extra CLI arguments into `out`; panics with stderr on failure.
fn compile(model: &Path, args: &[&str], out: &Path) -> Plan {
    let mut all = vec!["compile", model.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().expect("utf-8 path")]);
    let (code, stdout, stderr) = tessera(&all);
    assert_eq!(code, 0, "{all:?}: {stderr}");
    assert!(!stdout.is_empty());
    Plan::read(out).unwrap_or_else(|e| panic!("{e}"))
}

/// Collective steps of each rank's program.
fn collectives_per_rank(plan: &Plan) -> Vec<Vec<(String, Vec<usize>)>> {
    plan.ranks
        .iter()
        .map(|r| {
            r.steps
                .iter()
                .filter_map(|s| match &s.kind {
                    StepKind::Collective {
                        collective, group, ..
                    } => Some((collective.as_str().to_string(), group.clone())),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Compiles, runs and checks `model` on every mesh; returns how many meshes ran.
fn check_model(label: &str, model: &Path, data: &Path) -> usize {
    let inputs = inputs(data);
    assert!(
        !inputs.is_empty(),
        "{label}: no inputs in {}",
        data.display()
    );
    let dir = scratch(label);
    let mut ran = 0;
    for (d, t) in MESHES {
        let whole = shape_arg(&inputs, 1);
        let mesh = format!("{d}x{t}");
        let path = dir.join(format!("{label}_{mesh}.json"));
        let plan = compile(model, &["--mesh", &mesh, "--shape", &whole], &path);
        assert_eq!(plan.mesh.shape, vec![d, t], "{label} {mesh}");
        assert_eq!(plan.ranks.len(), d * t);
        // The same search at one group's batch, on T devices.
        let one = compile(
            model,
            &[
                "--devices",
                &t.to_string(),
                "--shape",
                &shape_arg(&inputs, d),
            ],
            &dir.join(format!("{label}_1x{t}.json")),
        );
        let (mesh_c, one_c) = (collectives_per_rank(&plan), collectives_per_rank(&one));
        for (rank, cs) in mesh_c.iter().enumerate() {
            let (g, member) = (rank / t, rank % t);
            let want: Vec<(String, Vec<usize>)> = one_c[member]
                .iter()
                .map(|(k, grp)| (k.clone(), grp.iter().map(|m| m + g * t).collect()))
                .collect();
            assert_eq!(
                cs, &want,
                "{label} {mesh} rank {rank}: the data axis changed the collectives"
            );
        }
        let report = PlanReport::new(&plan, None);
        let axis = report.data_axis.as_ref().expect("a data axis");
        assert_eq!((axis.collectives, axis.bytes), (0, 0), "{label} {mesh}");
        assert_eq!(report.groups.len(), d);
        for grp in &report.groups {
            assert_eq!(grp.collectives as usize, one_c[0].len(), "{label} {mesh}");
        }
        // Run as tessera-run does and compare with onnxruntime on the whole batch.
        let loaded = open_plan(&path, None).unwrap_or_else(|e| panic!("{label} {mesh}: {e}"));
        let (got, stats) = run_plan(&loaded.plan, &loaded.store, &inputs, &RunOptions::default())
            .unwrap_or_else(|e| panic!("{label} {mesh}: {e}"));
        assert_eq!(stats.ranks.len(), d * t);
        // What tessera-run --check compares with: the reference executor on each group's
        // slice of the batch, gathered.
        let reference = reference_outputs(&loaded.plan, &loaded.store, &inputs)
            .unwrap_or_else(|e| panic!("{label} {mesh}: reference: {e}"));
        let g = &plan.graph;
        for (o, (out, r)) in g.outputs.iter().zip(got.iter().zip(&reference)) {
            let name = &g.tensor(*o).name;
            let want = read_npy(&data.join(format!("ort_output_{}.npy", sanitize(name))));
            let diff = max_abs_diff(r, &want);
            assert!(
                diff <= ORT_TOLERANCE,
                "{label} --mesh {mesh}: the reference's '{name}' differs from onnxruntime by {diff}"
            );
            assert_eq!(out.shape, r.shape);
        }
        for (o, out) in g.outputs.iter().zip(&got) {
            let name = &g.tensor(*o).name;
            let want = read_npy(&data.join(format!("ort_output_{}.npy", sanitize(name))));
            let diff = max_abs_diff(out, &want);
            eprintln!(
                "{label} --mesh {mesh}: output '{name}' {:?}, max abs to onnxruntime {diff:.3e}, {} collectives per rank",
                out.shape,
                mesh_c[0].len()
            );
            assert!(
                diff <= ORT_TOLERANCE,
                "{label} --mesh {mesh}: output '{name}' differs from onnxruntime by {diff}"
            );
        }
        ran += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    ran
}

#[test]
fn example_models_on_data_by_tensor_meshes_match_onnxruntime() {
    for name in ["mlp", "mlp_gemm", "sdpa_2l", "gpt2_4l", "llama_4l"] {
        let model = root().join(format!("examples/models/{name}.onnx"));
        let data = root().join(format!("tests/data/mesh/{name}"));
        assert_eq!(check_model(name, &model, &data), MESHES.len());
    }
}

#[test]
fn a_zoo_model_on_data_by_tensor_meshes_matches_onnxruntime() {
    let zoo = std::env::var("TESSERA_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/zoo"));
    let model = zoo.join("bert__base.onnx");
    if !model.is_file() {
        eprintln!(
            "SKIP zoo mesh: {} not generated (scripts/setup.sh)",
            model.display()
        );
        return;
    }
    let data = root().join("tests/data/mesh/bert__base");
    assert_eq!(check_model("bert__base", &model, &data), MESHES.len());
}

#[test]
fn indivisible_batches_and_oversized_meshes_are_one_line_errors() {
    let model = root().join("examples/models/mlp.onnx");
    let model = model.to_str().expect("utf-8 path");
    let out = scratch("errors").join("never.json");
    let out = out.to_str().expect("utf-8 path");
    for (args, needles) in [
        (
            vec!["--mesh", "4x2", "--shape", "x=6x64"],
            vec!["input 'x' has batch 6 on axis 0", "4 data groups"],
        ),
        (
            vec!["--mesh", "2x2", "--shape", "x=8x64", "--batch-axis", "x=2"],
            vec!["--batch-axis x=2", "has no axis 2"],
        ),
        (
            vec!["--mesh", "2x2", "--shape", "x=8x64", "--batch-axis", "y=0"],
            vec!["--batch-axis y=0", "no such input"],
        ),
        (
            vec!["--mesh", "64x128", "--shape", "x=8x64"],
            vec!["8192 devices is over the limit of 4096 devices"],
        ),
        (
            vec!["--devices", "2", "--shape", "x=8x64", "--batch-axis", "x=0"],
            vec!["--batch-axis needs a data axis"],
        ),
    ] {
        let mut all = vec!["compile", model];
        all.extend(args.iter().copied());
        all.extend(["-o", out]);
        let (code, _, err) = tessera(&all);
        assert_ne!(code, 0, "{all:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{all:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{all:?}: {err}");
        }
    }
    assert!(!Path::new(out).exists());
}

#[test]
fn plans_with_inconsistent_meshes_are_refused_on_read() {
    let dir = scratch("read");
    let model = root().join("examples/models/mlp.onnx");
    let path = dir.join("mlp_2x2.json");
    compile(&model, &["--mesh", "2x2", "--shape", "x=8x64"], &path);
    let text = std::fs::read_to_string(&path).expect("plan");
    let base: serde_json::Value = serde_json::from_str(&text).expect("json");
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit, &str); 8] = [
        (
            "axes",
            |v| v["mesh"]["axes"] = serde_json::json!(["tp", "dp"]),
            "expected [N] with axes",
        ),
        (
            "no data split",
            |v| {
                v.as_object_mut().expect("object").remove("data");
            },
            "has a data axis but the plan has no data split",
        ),
        (
            "1-D with a data split",
            |v| {
                v["mesh"] = serde_json::json!({"shape": [4], "axes": ["tp"]});
            },
            "has no data axis",
        ),
        (
            "collective across groups",
            |v| {
                for step in v["ranks"][0]["steps"].as_array_mut().expect("steps") {
                    if step["kind"] == "collective" {
                        step["group"] = serde_json::json!([0, 2]);
                    }
                }
            },
            "reaches rank 2 of another data group",
        ),
        (
            "whole batch not D groups",
            |v| v["input_shapes"]["x"] = serde_json::json!([6, 64]),
            "is not 2 groups of",
        ),
        (
            "output axis",
            |v| v["data"]["outputs"] = serde_json::json!([5]),
            "has no batch axis 5",
        ),
        (
            "groups run different programs",
            |v| {
                let steps = v["ranks"][3]["steps"].as_array_mut().expect("steps");
                let last = steps.pop().expect("a step");
                steps.insert(0, last);
            },
            "rank 3 of data group 1 does not run rank 1's program",
        ),
        (
            "unknown input",
            |v| v["data"]["inputs"]["z"] = serde_json::json!(0),
            "names 'z', not a graph input",
        ),
    ];
    for (what, edit, needle) in edits {
        let mut v = base.clone();
        edit(&mut v);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, serde_json::to_string_pretty(&v).expect("json")).expect("write");
        let e = Plan::read(&bad).expect_err(what).to_string();
        assert!(e.contains(needle), "{what}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_and_dot_show_the_groups() {
    let dir = scratch("show");
    let model = root().join("examples/models/gpt2_1l.onnx");
    let path = dir.join("gpt2_2x2.json");
    let plan = compile(
        &model,
        &[
            "--mesh",
            "2x2",
            "--shape",
            "input_ids=4x16",
            "--cost-model",
            "nvlink",
        ],
        &path,
    );
    let p = path.to_str().expect("utf-8 path");
    let (code, text, err) = tessera(&["inspect", p]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "devices 4 (mesh 2x2)",
        "data axis: 2 groups of 2 devices",
        "inputs: input_ids split on axis 0",
        "outputs gathered along axis 0",
        // nvlink's preset: InfiniBand HDR between the machines of the groups.
        "across groups: 0 collectives, 0 B moved (links across groups: 10.0 µs",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let (code, json, err) = tessera(&["inspect", p, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["data_axis"]["collectives"], 0);
    assert_eq!(v["data_axis"]["bytes"], 0);
    assert_eq!(v["data_axis"]["inter_group_beta_bytes_per_s"], 20e9);
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[1]["ranks"], serde_json::json!([2, 3]));
    // Both groups hold, compute and communicate the same.
    for key in [
        "collectives",
        "collective_bytes",
        "max_param_bytes",
        "flops",
    ] {
        assert_eq!(groups[0][key], groups[1][key], "{key}");
    }
    let per_group = plan.ranks[0]
        .steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Collective { .. }))
        .count();
    assert_eq!(groups[0]["collectives"], per_group);
    let (code, dot, err) = tessera(&["dot", p, "--rank", "3"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "member 1 of data group 1 (ranks 2,3); mesh 2x2",
        "subgraph cluster_group0",
        "subgraph cluster_group1",
        "data group 1: axis 0 [2:4] of 4",
        "group [2, 3]",
        "gathered along axis 0 over 2 groups",
    ] {
        assert!(dot.contains(needle), "{needle}: {dot}");
    }
    assert!(!dot.contains("group [0, 1]"), "{dot}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resident_session_runs_a_mesh_plan_on_the_whole_batch() {
    use tessera_runtime::session::{Session, SessionOptions};
    let dir = scratch("session");
    let model = root().join("examples/models/mlp_gemm.onnx");
    let data = root().join("tests/data/mesh/mlp_gemm");
    let path = dir.join("mlp_gemm_4x2.json");
    compile(&model, &["--mesh", "4x2", "--shape", "x=8x64"], &path);
    let session =
        Session::open(&path, None, &SessionOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(session.devices(), 8);
    // The session declares the whole batch, as the caller feeds it.
    assert_eq!(session.inputs()[0].shape, vec![8, 64]);
    assert_eq!(session.outputs()[0].shape, vec![8, 10]);
    let inputs = inputs(&data);
    let want = read_npy(&data.join("ort_output_logits.npy"));
    for run in 0..2 {
        let got = session
            .run(&inputs)
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        let diff = max_abs_diff(&got[0], &want);
        assert!(diff <= ORT_TOLERANCE, "run {run}: {diff}");
    }
    // One group's batch is not the session's input.
    let mut half = inputs.clone();
    let x = &inputs["x"];
    half.insert(
        "x".into(),
        Tensor::f32(
            vec![2, 64],
            x.to_f64_vec()[..128].iter().map(|v| *v as f32).collect(),
        ),
    );
    let e = session.run(&half).unwrap_err().to_string();
    assert!(e.contains("expected f32[8, 64], got f32[2, 64]"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_library_compiles_for_a_mesh_in_memory() {
    use tessera::{compile as compile_model, CompileOptions};
    use tessera_runtime::session::SessionOptions;
    let model = root().join("examples/models/sdpa_2l.onnx");
    let data = root().join("tests/data/mesh/sdpa_2l");
    let inputs = inputs(&data);
    let mut opts = CompileOptions::new(2);
    opts.data_groups = 4;
    opts.shapes = BTreeMap::from([("x".to_string(), vec![8, 8, 64])]);
    let compiled = compile_model(&model, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compiled.plan().mesh.shape, vec![4, 2]);
    let session = compiled
        .session(&SessionOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let got = session.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let diff = max_abs_diff(&got[0], &read_npy(&data.join("ort_output_y.npy")));
    assert!(diff <= ORT_TOLERANCE, "{diff}");
    opts.shapes = BTreeMap::from([("x".to_string(), vec![6, 8, 64])]);
    let e = compile_model(&model, &opts).unwrap_err().to_string();
    assert!(e.contains("input 'x' has batch 6 on axis 0"), "{e}");
    opts.data_groups = 4096;
    let e = compile_model(&model, &opts).unwrap_err().to_string();
    assert!(e.contains("at most 4096 devices in all"), "{e}");
}
