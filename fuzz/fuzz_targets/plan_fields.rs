//! Plan fields: structure-aware plan fuzzing. Byte-level mutations of a plan rarely keep it
//! parseable JSON of the right shape, so this target starts from a valid compiled plan (the
//! MLP example on 2 devices) and uses the input as a list of edits: each 3 bytes pick a
//! node of the plan's JSON tree and replace it with a value that has broken plans before
//! (0, -1, 2^53, u64::MAX, NaN strings, paths with `..`, shorter or emptied arrays…). The
//! edited plan goes through `Plan::from_bytes`, the runtime's `validate_plan` and
//! `verify_files` (against the real model, so an untouched plan verifies), and a plan that
//! passes all three and whose values and inputs are all small (at most 1 MiB each, so that
//! a large but valid tensor is not reported as an out-of-memory crash) is run on the CPU
//! backend with zero inputs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use tessera_ir::plan::Plan;
use tessera_ir::{checked_bytes, DType, Tensor, TensorData};
use tessera_runtime::exec::validate::validate_plan;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

const PLAN: &str = include_str!("../corpus/plan_load/seed_mlp_tp2.json");
const MODEL: &[u8] = include_bytes!("../../examples/models/mlp.onnx");
/// Largest value a plan may hold and still be run.
const RUN_MAX_BYTES: usize = 1 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    plan_path: PathBuf,
    model: PathBuf,
    base: Value,
    nodes: usize,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let model = dir.path().join("mlp.onnx");
        std::fs::write(&model, MODEL).expect("write model");
        std::fs::write(dir.path().join("w.bin"), [0u8; 64]).expect("write w.bin");
        let base: Value = serde_json::from_str(PLAN).expect("the seed plan is JSON");
        let nodes = count(&base);
        Fixture {
            plan_path: dir.path().join("plan.json"),
            _dir: dir,
            model,
            base,
            nodes,
        }
    })
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `n`-th node of `v` in pre-order.
fn nth_mut<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|x| nth_mut(x, n)),
        Value::Object(o) => o.values_mut().find_map(|x| nth_mut(x, n)),
        _ => None,
    }
}

const NUMBERS: &[i128] = &[
    0,
    1,
    2,
    3,
    -1,
    64,
    1 << 31,
    1 << 32,
    1 << 53,
    (1 << 62) + 1,
    u64::MAX as i128,
    i64::MIN as i128,
];
const STRINGS: &[&str] = &[
    "",
    "NaN",
    "inf",
    "-inf",
    "w.bin",
    "mlp.onnx",
    "../mlp.onnx",
    "/etc/hostname",
    "x",
    "f16",
    "i64",
    "bool",
];

/// Applies edit `choice` to `v`.
fn edit(v: &mut Value, choice: u8) {
    let c = usize::from(choice);
    match v {
        Value::Number(_) | Value::Null => {
            *v = match c % (NUMBERS.len() + 3) {
                i if i < NUMBERS.len() => {
                    serde_json::from_str(&NUMBERS[i].to_string()).expect("an integer is JSON")
                }
                i if i == NUMBERS.len() => Value::from(0.5),
                i if i == NUMBERS.len() + 1 => Value::from(1e300),
                _ => Value::Null,
            }
        }
        Value::String(s) => *s = STRINGS[c % STRINGS.len()].to_string(),
        Value::Bool(b) => *b = !*b,
        Value::Array(a) => match c % 4 {
            0 => {
                a.pop();
            }
            1 => a.clear(),
            2 => {
                if let Some(x) = a.first().cloned() {
                    a.push(x);
                }
            }
            _ => a.reverse(),
        },
        Value::Object(o) => {
            if !o.is_empty() {
                let key = o.keys().nth(c % o.len()).cloned();
                if let Some(k) = key {
                    o.remove(&k);
                }
            }
        }
    }
}

/// A zero tensor of `dtype` and `shape`.
fn zeros(dtype: DType, shape: &[usize], n: usize) -> Tensor {
    let data = match dtype {
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 => TensorData::I64(vec![0; n]),
        DType::Bool => TensorData::Bool(vec![false; n]),
        _ => TensorData::F32(vec![0.0; n]),
    };
    Tensor {
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut v = f.base.clone();
    for e in data.chunks_exact(3).take(16) {
        let mut n = usize::from(u16::from_le_bytes([e[0], e[1]])) % f.nodes;
        if let Some(node) = nth_mut(&mut v, &mut n) {
            edit(node, e[2]);
        }
    }
    let Ok(bytes) = serde_json::to_vec(&v) else {
        return;
    };
    let Ok(plan) = Plan::from_bytes(&bytes, &f.plan_path) else {
        return;
    };
    if validate_plan(&plan).is_err() {
        return;
    }
    let Ok(files) = plan.verify_files(&f.plan_path, Some(&f.model)) else {
        return;
    };
    // The values, and the graph inputs this harness allocates (an input no value holds
    // is not covered by the values).
    let tensor_small = |id: usize| {
        plan.graph
            .tensors
            .get(id)
            .and_then(|t| checked_bytes(&t.shape, t.dtype))
            .is_some_and(|b| b <= RUN_MAX_BYTES)
    };
    let small = plan.values.iter().all(|val| tensor_small(val.tensor.index()))
        && plan.graph.inputs.iter().all(|id| tensor_small(id.index()));
    if !small {
        return;
    }
    let mut inputs = BTreeMap::new();
    for &id in &plan.graph.inputs {
        let Some(t) = plan.graph.tensors.get(id.index()) else {
            return;
        };
        let Some(n) = tessera_ir::checked_numel(&t.shape) else {
            return;
        };
        inputs.insert(t.name.clone(), zeros(t.dtype, &t.shape, n));
    }
    let store = WeightStore::verified(&files);
    let _ = run_plan(&plan, &store, &inputs, &RunOptions::default());
});
