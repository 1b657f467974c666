//! The export zoo (scripts/gen_zoo.py, written to `.cache/zoo` by scripts/setup.sh, or to
//! `$TESSERA_ZOO`): 4 model families, each exported in 8 or 9 idioms with the same weights.
//!
//! Every file is compiled with the `tessera` CLI (`--objective memory`) at N = 1, 2, 4 (batch 2 × seq 16), run from
//! its plan on N CPU devices as `tessera-run` runs it (`open_plan` verifies the source, then
//! `run_plan`), and compared with its own onnxruntime outputs (max abs ≤ 1e-4): correctness is
//! never a known gap. Then, per family, every variant's plan must match the `base` plan
//! (objective cost within 0.1 %, the same collectives of each kind per layer), move no more
//! logical collective bytes than the Megatron-style hand plan (zoo.json, formula in
//! scripts/gen_zoo.py) and hold at most 1.25 × model bytes / N of parameters per rank.
//! The test prints the table of every (variant, check) and fails on any failing check not in
//! [`KNOWN_GAPS`], and on any known gap that now passes (remove it from the list). A compile
//! that runs past [`COMPILE_TIMEOUT`] is killed and listed; its checks stay unchecked.
mod common;

use common::{max_abs_diff, read_npy, root, sanitize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tessera_ir::plan::Plan;
use tessera_runtime::exec::load::{open_plan, LoadedPlan};
use tessera_runtime::exec::{run_plan, RunOptions};

const DEVICES: [usize; 3] = [1, 2, 4];
/// Max absolute difference to onnxruntime's outputs.
const ORT_TOLERANCE: f64 = 1e-4;
/// Relative difference of a variant's objective cost to its family's base plan.
const COST_TOLERANCE: f64 = 1e-3;
/// Parameter bytes per rank may be at most this times model bytes / N.
const PARAM_SLACK: f64 = 1.25;
/// A compile that takes longer is killed and its checks are left unchecked (compile times are
/// reported by scripts/zoo_bench.py; a time limit as a check would pass or fail with the load).
const COMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

// Reasons of the known gaps (measured 2026-12-04; the test's table shows the numbers).
const INT8_PLAN: &str =
    "GPT-2's tied embedding / LM head stored int8 is a quarter of the bytes, so \
     the memory objective affords holding the table in two layouts (hidden-split for the \
     Gather, then an all-gather where the f32 base all-reduces; vocab-split for the LM head): \
     2.3-8.9 % cheaper, a different plan because the model holds fewer bytes";

/// (variant, check, reason) of every check that fails today.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[
    ("gpt2__int8", "cost N=2", INT8_PLAN),
    ("gpt2__int8", "collectives N=2", INT8_PLAN),
    ("gpt2__int8", "cost N=4", INT8_PLAN),
    ("gpt2__int8", "collectives N=4", INT8_PLAN),
    ("gpt2__int8zp", "cost N=2", INT8_PLAN),
    ("gpt2__int8zp", "collectives N=2", INT8_PLAN),
    ("gpt2__int8zp", "cost N=4", INT8_PLAN),
    ("gpt2__int8zp", "collectives N=4", INT8_PLAN),
];

/// One zoo file, from zoo.json.
struct Entry {
    family: String,
    dir: String,
    file: String,
    shapes: String,
    param_bytes: u64,
}

/// What one compile + run of one file on N devices gave.
#[derive(Clone)]
struct Outcome {
    /// Objective cost of the plan (model seconds).
    cost: f64,
    /// Collective count by (kind, layer or None outside the repeated blocks).
    collectives: BTreeMap<(String, Option<u32>), usize>,
    /// Sum of the collectives' logical bytes.
    logical_bytes: u64,
    /// Largest parameter bytes of a rank.
    max_param_bytes: u64,
    /// Max abs difference to onnxruntime per output, or why it could not run.
    ort: Result<Vec<(String, f64)>, String>,
}

/// The zoo's directory, when generated.
fn zoo_dir() -> Option<PathBuf> {
    let dir = std::env::var("TESSERA_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/zoo"));
    dir.join("zoo.json").is_file().then_some(dir)
}

fn entries(index: &Value) -> Vec<Entry> {
    let str_of = |m: &Value, k: &str| {
        m[k].as_str()
            .unwrap_or_else(|| panic!("zoo.json: model without '{k}': {m}"))
            .to_string()
    };
    index["models"]
        .as_array()
        .expect("zoo.json: 'models' is a list")
        .iter()
        .map(|m| Entry {
            family: str_of(m, "family"),
            dir: str_of(m, "dir"),
            file: str_of(m, "file"),
            shapes: str_of(m, "test_shapes"),
            param_bytes: m["param_bytes"].as_u64().expect("zoo.json: param_bytes"),
        })
        .collect()
}

/// Inputs `input_<name>.npy` of `dir`, by name.
fn inputs(dir: &Path) -> BTreeMap<String, tessera_ir::Tensor> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("dir entry").path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if let Some(name) = file
            .strip_prefix("input_")
            .and_then(|f| f.strip_suffix(".npy"))
        {
            out.insert(name.to_string(), read_npy(&path));
        }
    }
    out
}

/// Runs the plan at `plan_path` on CPU devices and compares it with onnxruntime's outputs.
fn run_against_ort(plan_path: &Path, ref_dir: &Path) -> Result<Vec<(String, f64)>, String> {
    let LoadedPlan { plan, store } = open_plan(plan_path, None).map_err(|e| e.to_string())?;
    let (got, _) = run_plan(&plan, &store, &inputs(ref_dir), &RunOptions::default())
        .map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    for (t, value) in plan.graph.outputs.iter().zip(&got) {
        let name = &plan.graph.tensor(*t).name;
        let want = read_npy(&ref_dir.join(format!("ort_output_{}.npy", sanitize(name))));
        diffs.push((name.clone(), max_abs_diff(value, &want)));
    }
    Ok(diffs)
}

/// Runs the `tessera` binary (as `common::tessera` does) for at most [`COMPILE_TIMEOUT`];
/// returns its stderr, or None when it ran out of time (it is killed then).
fn tessera_within_timeout(args: &[&str]) -> Option<(i32, String)> {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tessera");
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for tessera") {
            let mut err = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                pipe.read_to_string(&mut err)
                    .expect("read tessera's stderr");
            }
            return Some((status.code().unwrap_or(-1), err));
        }
        if t0.elapsed() > COMPILE_TIMEOUT {
            child
                .kill()
                .expect("kill the tessera compile that ran out of time");
            child.wait().expect("reap tessera");
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Compiles `e` for `n` devices into `out`, runs it and reads its plan's figures; None when
/// the compile ran past [`COMPILE_TIMEOUT`].
fn compile_and_run(zoo: &Path, e: &Entry, n: usize, out: &Path) -> Option<Outcome> {
    let model = zoo.join(&e.file);
    let plan_path = out.join(format!("{}.n{n}.json", e.dir));
    let model_arg = model.to_str().expect("utf-8 path");
    let plan_arg = plan_path.to_str().expect("utf-8 path");
    let devices = n.to_string();
    let args = [
        "compile",
        model_arg,
        "--devices",
        &devices,
        "--shape",
        &e.shapes,
        // The checks compare communication (the same collectives as the family's base plan,
        // no more bytes than Megatron's), which is what the memory objective minimises; the
        // default time objective weighs compute in full, so idioms with different FLOP counts
        // (Gemm's fused bias) may differ from the base by more than 0.1 %.
        "--objective",
        "memory",
        "-o",
        plan_arg,
    ];
    let (code, err) = tessera_within_timeout(&args)?;
    assert_eq!(code, 0, "{} N={n}: tessera compile failed: {err}", e.dir);
    let plan = Plan::read(&plan_path).unwrap_or_else(|err| panic!("{} N={n}: {err}", e.dir));
    let mut collectives = BTreeMap::new();
    for c in &plan.collectives {
        *collectives
            .entry((c.kind.as_str().to_string(), c.layer))
            .or_insert(0) += 1;
    }
    Some(Outcome {
        cost: plan.search.cost,
        collectives,
        logical_bytes: plan.collectives.iter().map(|c| c.bytes).sum(),
        max_param_bytes: plan
            .estimates
            .iter()
            .map(|r| r.param_bytes)
            .max()
            .unwrap_or(0),
        ort: run_against_ort(&plan_path, &zoo.join(&e.dir)),
    })
}

/// Compiles and runs every (entry, N), on as many threads as the machine has cores.
fn run_all(zoo: &Path, entries: &[Entry]) -> BTreeMap<(String, usize), Option<Outcome>> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let jobs: Vec<(&Entry, usize)> = entries
        .iter()
        .flat_map(|e| DEVICES.iter().map(move |&n| (e, n)))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(BTreeMap::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(e, n)) = jobs.get(i) else { break };
                let t0 = std::time::Instant::now();
                let o = compile_and_run(zoo, e, n, tmp.path());
                eprintln!("{} N={n}: {:.1} s", e.dir, t0.elapsed().as_secs_f64());
                let mut r = results.lock().expect("no worker panicked holding the lock");
                r.insert((e.dir.clone(), n), o);
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked holding the lock")
}

/// Collectives of a plan as `kind@layer×count` (layer `-` outside the repeated blocks).
fn describe(c: &BTreeMap<(String, Option<u32>), usize>) -> String {
    let parts: Vec<String> = c
        .iter()
        .map(|((k, l), n)| match l {
            Some(l) => format!("{k}@{l}×{n}"),
            None => format!("{k}@-×{n}"),
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// One checked property: (variant, check, passed, measured, limit).
type Row = (String, String, bool, String, String);

/// The plan checks of every variant against its family's base and the hand plan.
fn plan_checks(
    index: &Value,
    entries: &[Entry],
    outcomes: &BTreeMap<(String, usize), Option<Outcome>>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for e in entries {
        let base = format!("{}__base", e.family);
        for n in DEVICES {
            let mut row = |check: &str, ok: bool, got: String, want: String| {
                rows.push((e.dir.clone(), format!("{check} N={n}"), ok, got, want));
            };
            // A compile past the timeout leaves its checks unchecked (listed apart).
            let Some(o) = &outcomes[&(e.dir.clone(), n)] else {
                continue;
            };
            match &outcomes[&(base.clone(), n)] {
                None => {}
                Some(b) => {
                    let rel = (o.cost - b.cost).abs() / b.cost.abs().max(f64::MIN_POSITIVE);
                    row(
                        "cost",
                        rel <= COST_TOLERANCE,
                        format!(
                            "{:.4e} ({:+.2}%)",
                            o.cost,
                            100.0 * (o.cost - b.cost) / b.cost
                        ),
                        format!("{:.4e} ±0.1%", b.cost),
                    );
                    row(
                        "collectives",
                        o.collectives == b.collectives,
                        describe(&o.collectives),
                        describe(&b.collectives),
                    );
                }
            }
            let megatron = index["families"][&e.family]["megatron"]["2x16"][n.to_string()]
                ["logical_bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("zoo.json: no Megatron bytes for {} N={n}", e.family));
            row(
                "ring_bytes",
                o.logical_bytes <= megatron,
                o.logical_bytes.to_string(),
                format!("≤ {megatron}"),
            );
            let limit = PARAM_SLACK * e.param_bytes as f64 / n as f64;
            row(
                "params",
                o.max_param_bytes as f64 <= limit,
                o.max_param_bytes.to_string(),
                format!("≤ {limit:.0}"),
            );
        }
    }
    rows
}

#[test]
fn every_zoo_variant_runs_correctly_and_gets_its_familys_plan() {
    let Some(zoo) = zoo_dir() else {
        eprintln!("SKIP zoo: no zoo.json in $TESSERA_ZOO or .cache/zoo (run scripts/setup.sh)");
        return;
    };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(zoo.join("zoo.json")).expect("zoo.json"))
            .expect("zoo.json parses");
    let entries = entries(&index);
    let families: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.family.as_str()).collect();
    assert_eq!(families.len(), 4, "families: {families:?}");
    for f in &families {
        let variants = entries.iter().filter(|e| e.family == *f).count();
        assert!(variants >= 6, "{f}: only {variants} variants");
    }
    let outcomes = run_all(&zoo, &entries);

    // Correctness: never a known gap.
    let mut wrong = Vec::new();
    for e in &entries {
        for n in DEVICES {
            let Some(o) = &outcomes[&(e.dir.clone(), n)] else {
                continue;
            };
            match &o.ort {
                Err(err) => wrong.push(format!("{} N={n}: run failed: {err}", e.dir)),
                Ok(diffs) => {
                    for (name, d) in diffs {
                        eprintln!("{} N={n} '{name}': max abs to onnxruntime {d:.2e}", e.dir);
                        if d.is_nan() || *d > ORT_TOLERANCE {
                            wrong.push(format!("{} N={n} '{name}': max abs {d:.3e}", e.dir));
                        }
                    }
                }
            }
        }
    }

    let rows = plan_checks(&index, &entries, &outcomes);
    let gap = |v: &str, c: &str| KNOWN_GAPS.iter().find(|g| g.0 == v && g.1 == c);
    eprintln!("| variant | check | result | measured | expected |");
    eprintln!("|---|---|---|---|---|");
    let (mut unexpected, mut closed) = (Vec::new(), Vec::new());
    for (v, c, ok, got, want) in &rows {
        let status = match (ok, gap(v, c)) {
            (true, None) => "pass",
            (false, Some(_)) => "known gap",
            (false, None) => {
                unexpected.push(format!("(\"{v}\", \"{c}\", \"{got} vs {want}\"),"));
                "FAIL"
            }
            (true, Some(_)) => {
                closed.push(format!("{v} {c}"));
                "pass (known gap closed)"
            }
        };
        eprintln!("| {v} | {c} | {status} | {got} | {want} |");
    }
    let timed_out: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| o.is_none())
        .map(|((v, n), _)| format!("{v} N={n}"))
        .collect();
    eprintln!(
        "compiles past {} s (their checks, and those comparing with them, unchecked): {timed_out:?}",
        COMPILE_TIMEOUT.as_secs()
    );
    for (v, c, _) in KNOWN_GAPS {
        let n = c.rsplit_once(" N=").map(|(_, n)| n.to_string());
        assert!(
            entries.iter().any(|e| &e.dir == v)
                && n.is_some_and(|n| DEVICES.iter().any(|d| d.to_string() == n)),
            "KNOWN_GAPS names ({v}, {c}), which is not a check of the zoo"
        );
        if !rows.iter().any(|r| &r.0 == v && &r.1 == c) {
            eprintln!("known gap ({v}, {c}) unchecked: its compile (or its base's) timed out");
        }
    }
    let failed = rows.iter().filter(|r| !r.2).count();
    eprintln!(
        "{} checks: {} pass, {failed} fail ({} known gaps)",
        rows.len(),
        rows.len() - failed,
        KNOWN_GAPS.len()
    );
    assert!(
        wrong.is_empty(),
        "zoo outputs differ from onnxruntime:\n{}",
        wrong.join("\n")
    );
    assert!(
        unexpected.is_empty(),
        "{} failing checks not in KNOWN_GAPS:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        closed.is_empty(),
        "known gaps now pass; remove them from KNOWN_GAPS: {closed:?}"
    );
}
