//! Weight-only quantised models (DequantizeLinear of int8/uint8 initializers, written by
//! scripts/gen_quant_models.py into `.cache/quant` by scripts/setup.sh): each is compiled
//! with the `tessera` binary for N ∈ {1, 2, 4}, opened as `tessera-run` opens a plan (read,
//! validate, verify every weight file, scale and zero point included) and run on N CPU
//! devices; the outputs must match onnxruntime's (max abs ≤ 1e-4). The plans must split
//! both quantised MatMul weights and count them at their stored size (int8 bytes plus
//! scale and zero point), figures computed here from the shapes.
mod common;

use common::{max_abs_diff, read_npy, root, tessera};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::{import_model, ImportOptions};
use tessera_ir::plan::{sha256_file, Plan, SourceModel};
use tessera_ir::{DType, Tensor, WeightData};
use tessera_runtime::exec::load::open_plan;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::reference::run_graph;
use tessera_runtime::weights::WeightStore;

const D_IN: usize = 64;
const D_HID: usize = 128;
const TOLERANCE: f64 = 1e-4;

/// A generated model: its file, and the shapes of the first weight's scale (the second's
/// is per-tensor) as the plan holds them (the weight's rank).
struct Case {
    name: &'static str,
    w1_scale: [usize; 2],
}

const CASES: [Case; 2] = [
    Case {
        name: "quant_per_axis",
        w1_scale: [1, D_HID],
    },
    Case {
        name: "quant_blocked",
        w1_scale: [D_IN / 16, D_HID],
    },
];

fn model(name: &str) -> PathBuf {
    let p = root().join(".cache/quant").join(format!("{name}.onnx"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh (it runs scripts/gen_quant_models.py)",
        p.display()
    );
    p
}

fn inputs(name: &str) -> BTreeMap<String, Tensor> {
    let dir = root().join(".cache/quant").join(name);
    BTreeMap::from([("x".to_string(), read_npy(&dir.join("input_x.npy")))])
}

fn ort_output(name: &str) -> Tensor {
    read_npy(
        &root()
            .join(".cache/quant")
            .join(name)
            .join("ort_output_y.npy"),
    )
}

/// Stored bytes of the first weight (int8 [64, 128], f32 scale and int8 zero point of
/// `scale` shape) and of the second (uint8 [128, 64], one f32 scale, one uint8 zero point).
fn stored_bytes(case: &Case) -> (usize, usize) {
    let params: usize = case.w1_scale.iter().product();
    (D_IN * D_HID + params * (4 + 1), D_HID * D_IN + 4 + 1)
}

/// Compiles `model` for `n` devices into `dir`; returns the plan path.
fn compile(model: &Path, n: usize, dir: &Path) -> PathBuf {
    let plan = dir.join(format!("plan_{n}.json"));
    let (code, _, err) = tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--devices",
        &n.to_string(),
        "--shape",
        "x=2x8x64",
        "-o",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "compile {} for {n}: {err}", model.display());
    plan
}

/// The plan's quantised weights, by name: (stored dtype, logical dtype, scale shape).
fn quantised(plan: &Plan) -> BTreeMap<String, (DType, DType, Vec<usize>)> {
    plan.graph
        .weights
        .values()
        .filter_map(|w| {
            let q = w.quant.as_ref()?;
            Some((w.name.clone(), (w.dtype, q.dtype, q.scale.shape.clone())))
        })
        .collect()
}

#[test]
fn the_reference_executor_dequantises_like_onnxruntime() {
    for case in &CASES {
        let m = model(case.name);
        let x = inputs(case.name);
        let shapes = x
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect();
        let imported = import_model(
            &m,
            &ImportOptions {
                input_shapes: shapes,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: import: {e}", case.name));
        let g = &imported.graph;
        // Two weights, both quantised: the int8/uint8 initializers are not loaded as such.
        assert_eq!(g.weights.len(), 2, "{}", case.name);
        let w1 = g.tensor(g.tensor_by_name("w1").expect("w1"));
        assert_eq!(
            (w1.dtype, w1.shape.clone()),
            (DType::F32, vec![D_IN, D_HID])
        );
        let (b1, b2) = stored_bytes(case);
        assert_eq!(imported.report.parameter_bytes, b1 + b2, "{}", case.name);
        assert_eq!(imported.report.parameter_count, 2 * D_IN * D_HID);
        let store = WeightStore::open(&m).unwrap();
        let got = run_graph(g, &store, &x).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let diff = max_abs_diff(&got[0], &ort_output(case.name));
        eprintln!("{}: reference vs onnxruntime max abs {diff:.3e}", case.name);
        assert!(diff <= TOLERANCE, "{}: {diff}", case.name);
    }
}

#[test]
fn quantised_plans_split_the_weights_and_match_onnxruntime() {
    for case in &CASES {
        let m = model(case.name);
        let x = inputs(case.name);
        let want = ort_output(case.name);
        let dir = tempfile::tempdir().unwrap();
        let (b1, b2) = stored_bytes(case);
        for n in [1, 2, 4] {
            let label = format!("{} on {n} devices", case.name);
            let loaded = open_plan(&compile(&m, n, dir.path()), None)
                .unwrap_or_else(|e| panic!("{label}: open: {e}"));
            let plan = &loaded.plan;
            let q = quantised(plan);
            let scale1 = case.w1_scale.to_vec();
            assert_eq!(q["w1"], (DType::I8, DType::F32, scale1), "{label}");
            assert_eq!(q["w2"], (DType::U8, DType::F32, vec![1, 1]), "{label}");
            // Every weight byte comes from the model file, which the plan hashed.
            let model_file = m.file_name().unwrap().to_str().unwrap();
            let files: Vec<&String> = plan.source.weight_files.keys().collect();
            assert_eq!(files, [model_file], "{label}");
            // Megatron: w1 by columns (its scale and zero point sliced along, or whole
            // when per-tensor on that axis), w2 by rows (scalar scale and zero point whole).
            let shards: BTreeMap<&str, usize> = plan
                .weight_shards
                .iter()
                .map(|s| (s.name.as_str(), s.axis))
                .collect();
            let expected_bytes = if n == 1 {
                assert!(shards.is_empty(), "{label}: {shards:?}");
                b1 + b2
            } else {
                assert_eq!(shards, BTreeMap::from([("w1", 1), ("w2", 0)]), "{label}");
                // w1 splits every part N ways on axis 1; w2's 8192 bytes split, 5 whole.
                b1 / n + (D_HID * D_IN) / n + 5
            };
            for e in &plan.estimates {
                assert_eq!(
                    e.param_bytes, expected_bytes as u64,
                    "{label}: rank {}",
                    e.rank
                );
                let bound = 1.25 * (b1 + b2) as f64 / n as f64 + 5.0;
                assert!((e.param_bytes as f64) <= bound, "{label}: over {bound}");
            }
            let (got, stats) = run_plan(plan, &loaded.store, &x, &RunOptions::default())
                .unwrap_or_else(|e| panic!("{label}: run: {e}"));
            let diff = max_abs_diff(&got[0], &want);
            eprintln!(
                "{label}: {} stored weight bytes per rank, max abs to onnxruntime {diff:.3e}, {} collectives/rank",
                expected_bytes, stats.ranks[0].collectives
            );
            assert!(
                diff <= TOLERANCE,
                "{label}: differs from onnxruntime by {diff}"
            );
            let all_reduces = plan.collectives.len();
            assert_eq!(all_reduces, usize::from(n > 1), "{label}: one all-reduce");
        }
    }
}

/// DequantizeLinear of a graph input (an activation) is `(xq − 1) · 0.5` in elementwise
/// ops: equal to onnxruntime exactly (every value is exact in f32) on 1 and 2 devices.
#[test]
fn dequantizing_an_activation_equals_onnxruntime() {
    let m = model("quant_activation");
    let dir = tempfile::tempdir().unwrap();
    let refs = root().join(".cache/quant/quant_activation");
    let xq = read_npy(&refs.join("input_xq.npy"));
    assert_eq!(xq.dtype, DType::I8);
    let want = read_npy(&refs.join("ort_output_y.npy"));
    for n in ["1", "2"] {
        let plan = dir.path().join(format!("p{n}.json"));
        let (code, _, err) = tessera(&[
            "compile",
            m.to_str().unwrap(),
            "--devices",
            n,
            "-o",
            plan.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let loaded = open_plan(&plan, None).unwrap_or_else(|e| panic!("{e}"));
        let inputs = BTreeMap::from([("xq".to_string(), xq.clone())]);
        let (got, _) = run_plan(&loaded.plan, &loaded.store, &inputs, &RunOptions::default())
            .unwrap_or_else(|e| panic!("N={n}: {e}"));
        assert_eq!(got[0].as_f32(), want.as_f32(), "N={n}");
    }
}

/// Moves the bytes of `w1`'s scale out of the model into `scale_file` (beside it) and
/// points the plan at `location` for it, recording the sha256 of every file again.
fn move_scale(plan_path: &Path, model: &Path, scale_file: &str, location: &str) {
    let mut plan = Plan::read(plan_path).unwrap();
    let w1 = plan
        .graph
        .weights
        .values_mut()
        .find(|w| w.name == "w1")
        .expect("w1");
    let scale = &mut w1.quant.as_mut().expect("w1 is quantised").scale;
    let WeightData::File { offset, length, .. } = scale.data.clone() else {
        panic!("w1's scale is raw_data in the model");
    };
    let bytes = std::fs::read(model).unwrap();
    let dir = model.parent().unwrap();
    std::fs::write(
        dir.join(scale_file),
        &bytes[offset as usize..(offset + length) as usize],
    )
    .unwrap();
    scale.data = WeightData::File {
        path: location.into(),
        offset: 0,
        length,
    };
    if location == scale_file {
        plan.source = SourceModel::record(model, plan_path, &plan.graph).unwrap();
    } else {
        // A crafted plan: the scale copied outside the folder, its sha256 recorded.
        std::fs::copy(dir.join(scale_file), dir.join(location)).unwrap();
        let sha = sha256_file(&dir.join(location)).unwrap();
        plan.source.weight_files.insert(location.into(), sha);
    }
    plan.write(plan_path).unwrap();
}

#[test]
fn scale_files_are_hashed_verified_and_confined() {
    let case = &CASES[0];
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("m");
    std::fs::create_dir(&folder).unwrap();
    let m = folder.join("model.onnx");
    std::fs::copy(model(case.name), &m).unwrap();
    let plan_path = compile(&m, 2, dir.path());
    move_scale(&plan_path, &m, "w1_scale.bin", "w1_scale.bin");
    let loaded = open_plan(&plan_path, None).unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<&String> = loaded.plan.source.weight_files.keys().collect();
    assert_eq!(files, ["model.onnx", "w1_scale.bin"]);
    // The scale read from its own file gives onnxruntime's output.
    let (got, _) = run_plan(
        &loaded.plan,
        &loaded.store,
        &inputs(case.name),
        &RunOptions::default(),
    )
    .unwrap();
    let diff = max_abs_diff(&got[0], &ort_output(case.name));
    assert!(diff <= TOLERANCE, "{diff}");
    // A changed scale file fails verification, naming it.
    let scale = folder.join("w1_scale.bin");
    let mut bytes = std::fs::read(&scale).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&scale, &bytes).unwrap();
    let e = open_plan(&plan_path, None).unwrap_err().to_string();
    assert!(e.contains("w1_scale.bin") && e.contains("sha256"), "{e}");
    // A scale path leaving the model's folder is refused even with its sha256 recorded.
    let outside = compile(&m, 2, dir.path());
    move_scale(&outside, &m, "w1_scale.bin", "../w1_scale.bin");
    let e = open_plan(&outside, None).unwrap_err().to_string();
    assert!(e.contains("../w1_scale.bin") && e.contains("'..'"), "{e}");
}

#[test]
fn a_plan_with_a_misshapen_scale_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = compile(&model("quant_per_axis"), 2, dir.path());
    let mut plan = Plan::read(&plan_path).unwrap();
    for w in plan.graph.weights.values_mut() {
        if let Some(q) = w.quant.as_mut().filter(|_| w.name == "w1") {
            // The per-axis scale [1, 128] written as its ONNX shape [128]: another rank.
            q.scale.shape = vec![D_HID];
        }
    }
    plan.write(&plan_path).unwrap();
    let e = open_plan(&plan_path, None).unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    for needle in ["'w1'", "'w1_scale' [128] does not fit weight [64, 128]"] {
        assert!(e.contains(needle), "'{e}' lacks '{needle}'");
    }
}
