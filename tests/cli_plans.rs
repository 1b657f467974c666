//! End to end through the `tessera` binary: compile every example model for 2 devices,
//! then check the plan files, `inspect --json` and `dot` on them.
mod common;

use common::tessera;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The example models and the shapes they are compiled with.
const EXAMPLES: [(&str, &str); 5] = [
    ("mlp", "x=4x64"),
    ("gpt2_1l", "input_ids=2x16"),
    ("gpt2_4l", "input_ids=2x16"),
    ("llama_1l", "input_ids=2x16"),
    ("llama_4l", "input_ids=2x16"),
];

/// Runs `tessera ARGS` and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let (code, out, err) = tessera(args);
    assert_eq!(code, 0, "tessera {args:?} failed: {err}");
    out
}

fn model_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/models")
        .join(format!("{name}.onnx"))
}

/// Compiles `examples` for 2 devices into `dir`.
fn compile_into(dir: &Path, examples: &[(&str, &str)]) {
    for (name, shape) in examples {
        let plan = dir.join(format!("{name}.json"));
        let model = model_path(name);
        ok(&[
            "compile",
            model.to_str().unwrap(),
            "--devices",
            "2",
            "--shape",
            shape,
            "-o",
            plan.to_str().unwrap(),
        ]);
    }
}

/// Compiles the fast examples once per test binary; returns the directory holding `NAME.json`.
fn compiled() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        compile_into(dir.path(), &EXAMPLES);
        dir
    })
    .path()
}

fn plan_path(name: &str) -> String {
    compiled()
        .join(format!("{name}.json"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The compiled plan of example `name`: its path and its JSON.
fn plan_json(name: &str) -> (String, Value) {
    let path = plan_path(name);
    let plan = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, plan)
}

/// Is Graphviz's `dot` installed?
fn graphviz() -> bool {
    Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Renders DOT source with `dot -Tsvg`, asserting success.
fn assert_graphviz_parses(dot: &str, what: &str) {
    use std::io::Write;
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dot");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Graphviz rejects the DOT of {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count_collective_nodes(dot: &str, kind: &str) -> usize {
    dot.matches(&format!("class=\"collective {kind}\"")).count()
}

/// Checks that both ranks of each plan in `dir`, and each model's logical graph, draw as DOT
/// that Graphviz accepts, and that `--format svg` gives SVG.
fn assert_examples_draw(dir: &Path, examples: &[(&str, &str)]) {
    if !graphviz() {
        eprintln!("skipped: Graphviz 'dot' is not installed (apt-get install graphviz)");
        return;
    }
    for &(name, shape) in examples {
        let plan = dir
            .join(format!("{name}.json"))
            .to_str()
            .unwrap()
            .to_string();
        for rank in ["0", "1"] {
            let dot = ok(&["dot", &plan, "--rank", rank]);
            assert_graphviz_parses(&dot, &format!("{name} rank {rank}"));
        }
        let model = model_path(name);
        let dot = ok(&["dot", model.to_str().unwrap(), "--shape", shape]);
        assert_graphviz_parses(&dot, &format!("the logical graph of {name}"));
        let svg = ok(&["dot", &plan, "--format", "svg"]);
        assert!(svg.contains("<svg"), "{name}: --format svg gives no SVG");
    }
}

#[test]
fn every_example_plan_draws_as_valid_graphviz() {
    assert_examples_draw(compiled(), &EXAMPLES);
}

#[test]
fn mlp_plan_has_exactly_one_all_reduce_node() {
    let dot = ok(&["dot", &plan_path("mlp")]);
    assert_eq!(count_collective_nodes(&dot, "all_reduce"), 1, "{dot}");
    assert_eq!(
        dot.matches("class=\"collective ").count(),
        1,
        "no other collectives: {dot}"
    );
    // Megatron MLP: fc1's weight and bias split by columns, fc2's weight by rows.
    assert_eq!(dot.matches("slice axis").count(), 3, "{dot}");
    // The exported erf-GELU chain (Div, Erf, Add, Mul, Mul) is one canonical Gelu op,
    // named after the node that ended the chain; none of its constants is left.
    assert!(dot.contains("label=\"Gelu\\nMul_10\""), "{dot}");
    assert!(!dot.contains("Erf") && !dot.contains("const"), "{dot}");
}

#[test]
fn collective_nodes_match_the_plan_on_every_rank() {
    for (name, _) in EXAMPLES {
        let (plan_file, plan) = plan_json(name);
        let report: Value = serde_json::from_str(&ok(&["inspect", &plan_file, "--json"])).unwrap();
        let expand = match report["layers"].as_u64() {
            Some(n) => format!("0..{n}"),
            None => String::new(),
        };
        for rank in ["0", "1"] {
            let mut args = vec!["dot", &plan_file, "--rank", rank];
            if !expand.is_empty() {
                args.extend(["--layers", &expand]);
            }
            let dot = ok(&args);
            let drawn = dot.matches("class=\"collective ").count();
            assert_eq!(
                drawn,
                plan["collectives"].as_array().unwrap().len(),
                "{name} rank {rank}"
            );
        }
    }
}

#[test]
fn inspect_json_has_every_key_with_the_right_types() {
    for (name, _) in EXAMPLES {
        let (plan_file, plan) = plan_json(name);
        let out = ok(&["inspect", &plan_file, "--json"]);
        let r: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{name}: inspect --json is not one JSON object: {e}"));
        assert_eq!(r["devices"], 2, "{name}");
        assert!(
            r["layers"].is_null() || r["layers"].is_u64(),
            "{name}: layers {}",
            r["layers"]
        );
        let mut total_count = 0;
        for kind in ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"] {
            let t = &r["totals"][kind];
            assert!(
                t["count"].is_u64() && t["bytes"].is_u64(),
                "{name}: totals.{kind} = {t}"
            );
            let from_plan: Vec<&Value> = plan["collectives"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["kind"] == kind)
                .collect();
            assert_eq!(
                t["count"].as_u64().unwrap() as usize,
                from_plan.len(),
                "{name} {kind}"
            );
            let bytes: u64 = from_plan.iter().map(|c| c["bytes"].as_u64().unwrap()).sum();
            assert_eq!(t["bytes"].as_u64().unwrap(), bytes, "{name} {kind}");
            total_count += from_plan.len();
        }
        assert!(
            total_count > 0,
            "{name}: a 2-device plan of a model with weights communicates"
        );
        assert!(r["lower_bound_bytes"].is_u64(), "{name}");
        let per_rank = r["per_rank"].as_array().expect("per_rank is a list");
        assert_eq!(per_rank.len(), 2, "{name}");
        for (i, row) in per_rank.iter().enumerate() {
            assert_eq!(row["rank"], i, "{name}");
            for k in ["param_bytes", "peak_activation_bytes", "flops"] {
                assert!(
                    row[k].as_u64().is_some_and(|v| v > 0),
                    "{name}: per_rank[{i}].{k} = {}",
                    row[k]
                );
            }
        }
        let s = &r["search"];
        for k in ["eclasses", "enodes", "iterations"] {
            assert!(s[k].is_u64(), "{name}: search.{k}");
        }
        assert!(s["stop_reason"].is_string(), "{name}");
        assert!(s["gap"].is_number(), "{name}");
        // The timings sidecar sits beside the plan, so the times are known.
        assert!(
            s["extract_ms"].as_f64().is_some_and(|v| v >= 0.0),
            "{name}: extract_ms {}",
            s["extract_ms"]
        );
        assert!(
            r["compile_ms"].as_f64().is_some_and(|v| v > 0.0),
            "{name}: compile_ms {}",
            r["compile_ms"]
        );
    }
}

#[test]
fn inspect_without_timings_reports_null_times() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    std::fs::copy(plan_path("mlp"), &copy).unwrap();
    let r: Value =
        serde_json::from_str(&ok(&["inspect", copy.to_str().unwrap(), "--json"])).unwrap();
    assert!(r["compile_ms"].is_null());
    assert!(r["search"]["extract_ms"].is_null());
    let text = ok(&["inspect", copy.to_str().unwrap()]);
    assert!(
        text.contains("all_reduce") && text.contains("per rank"),
        "{text}"
    );
}

#[test]
fn compile_is_deterministic_and_records_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_path("gpt2_1l");
    let mut plans = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("p{i}.json"));
        let printed = ok(&[
            "compile",
            model.to_str().unwrap(),
            "--devices",
            "2",
            "--shape",
            "input_ids=2x16",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(printed.contains("all-reduces per layer"), "{printed}");
        assert!(printed.contains("lower bound"), "{printed}");
        assert!(
            printed.contains("parameters per device: rank 0"),
            "{printed}"
        );
        assert!(dir.path().join(format!("p{i}.timings.json")).exists());
        plans.push(std::fs::read(&out).unwrap());
    }
    assert!(
        plans[0] == plans[1],
        "the same input must give a byte-identical plan"
    );
    let plan: Value = serde_json::from_slice(&plans[0]).unwrap();
    let src = plan["source"]["path"].as_str().unwrap();
    let resolved = dir.path().join(src).canonicalize().unwrap();
    assert_eq!(
        resolved,
        model.canonicalize().unwrap(),
        "source.path {src} is relative to the plan's directory"
    );
    let sha = plan["source"]["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    // The weights are read from the model itself: its hash is recorded for them too.
    assert_eq!(
        plan["source"]["weight_files"],
        serde_json::json!({ "gpt2_1l.onnx": sha })
    );
}

#[test]
fn compile_refuses_to_overwrite_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(model_path("mlp"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let m = model.to_str().unwrap();
    let (code, _, err) = tessera(&["compile", m, "--devices", "2", "--shape", "x=4x64", "-o", m]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write plan") && err.contains("m.onnx") && err.contains("source model"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the model was overwritten"
    );
}

#[test]
fn plan_errors_are_one_line() {
    let plan = plan_path("gpt2_4l");
    for (args, needle) in [
        (vec!["dot", &plan, "--rank", "7"], "rank 7"),
        (vec!["dot", &plan, "--layers", "3..9"], "3..9"),
        (vec!["dot", &plan, "--layers", "2..1"], "2..1"),
        (vec!["dot", &plan, "--layers", "x"], "'x'"),
    ] {
        let (code, _, err) = tessera(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let model = model_path("mlp");
    let (code, _, err) = tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--mesh",
        "4x2",
        "--shape",
        "x=6x64",
        "-o",
        "/tmp/never.json",
    ]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("input 'x' has batch 6 on axis 0")
            && err.contains("does not divide over 4 data groups"),
        "{err}"
    );
}
