//! Models quantised by onnxruntime's own tools (scripts/gen_ort_quant.py, run on the export
//! zoo's gpt2, bert and llama base models): `quantize_dynamic` (DynamicQuantizeLinear +
//! MatMulInteger, int8 per tensor and uint8 per channel), `quantize_static` in QDQ format
//! (QuantizeLinear / DequantizeLinear around every quantised op) and `MatMulNBitsQuantizer`
//! (com.microsoft MatMulNBits with 4 and 8 bits, and its QDQ form: DequantizeLinear of packed
//! INT4 initializers).
//!
//! Each is compiled with the `tessera` CLI for 1, 2 and 3 devices, run from its plan on CPU
//! devices, and compared with onnxruntime's outputs (graph optimisation `basic`, see the
//! script):
//! * weight-only variants (MatMulNBits, INT4 QDQ): max |tessera − onnxruntime| ≤ 1e-4 of the
//!   largest reference magnitude;
//! * variants that quantise activations (dynamic, QDQ): one float rounding apart, an
//!   activation may land on the other side of a rounding step, which moves whole rows of the
//!   output by a quantisation step. So: the median element within 1e-5, and the largest
//!   difference at most a tenth of how far quantisation itself moved the output (the
//!   difference between onnxruntime's quantised and float models).
//!
//! And the weights stay quantised: every quantised weight of the plan is stored at its own
//! width (4-bit weights packed, counted at 4 bits), and at N = 2 no rank holds more than
//! [`MAX_SHARE_AT_2`] of the model's stored bytes. Skipped (with a message) when python3 lacks
//! onnx, numpy or onnxruntime, or the zoo has not been generated (scripts/setup.sh).
mod common;

use common::{max_param_bytes, npys, root, sanitize, tessera};
use std::path::{Path, PathBuf};
use tessera_ir::plan::Plan;
use tessera_runtime::exec::load::{open_plan, LoadedPlan};
use tessera_runtime::exec::{run_plan, RunOptions};

/// Weight-only variants: max |diff| over max |reference|.
const WEIGHT_ONLY_TOLERANCE: f64 = 1e-4;
/// Activation-quantised variants: the median |diff| over max |reference|.
const MEDIAN_TOLERANCE: f64 = 1e-5;
/// Activation-quantised variants: max |diff| over max |quantised − float|.
const OF_QUANTISATION_ERROR: f64 = 0.1;
/// At N = 2, the most stored parameter bytes one rank may hold, as a part of the model's.
const MAX_SHARE_AT_2: f64 = 0.65;

const FAMILIES: [&str; 3] = ["gpt2", "bert", "llama"];
/// (variant, quantises activations, bits of its quantised weights, block size along K (0: per
/// tensor or channel)).
const VARIANTS: [(&str, bool, u32, usize); 7] = [
    ("dynamic", true, 8, 0),
    ("dynamic_pc", true, 8, 0),
    ("qdq", true, 8, 0),
    ("nbits4", false, 4, 32),
    ("nbits4_sym", false, 4, 16),
    ("nbits8", false, 8, 32),
    ("int4_qdq", false, 4, 32),
];

fn zoo_dir() -> Option<PathBuf> {
    let dir = std::env::var("TESSERA_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/zoo"));
    dir.join("zoo.json").is_file().then_some(dir)
}

/// Writes the quantised models into `out`; false (after saying why) when the tools are
/// missing.
fn generate(zoo: &Path, out: &Path) -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import numpy, onnx, onnxruntime.quantization"])
        .output();
    if !matches!(probe, Ok(o) if o.status.success()) {
        println!("skipping: python3 with numpy, onnx and onnxruntime is not available");
        return false;
    }
    let run = std::process::Command::new("python3")
        .arg(root().join("scripts/gen_ort_quant.py"))
        .args([zoo, out])
        .output()
        .expect("run scripts/gen_ort_quant.py");
    assert!(
        run.status.success(),
        "scripts/gen_ort_quant.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    true
}

fn compile(dir: &Path, model: &str, n: usize) -> PathBuf {
    let onnx = dir.join(format!("{model}.onnx"));
    let plan = dir.join(format!("{model}.n{n}.json"));
    let mut args: Vec<String> = vec![
        "compile".into(),
        onnx.display().to_string(),
        "--devices".into(),
        n.to_string(),
        "-o".into(),
        plan.display().to_string(),
    ];
    for (name, t) in npys(&dir.join(model), "input_") {
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        args.push("--shape".into());
        args.push(format!("{name}={}", dims.join("x")));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = tessera(&args);
    assert_eq!(code, 0, "{model} N={n}: tessera compile failed: {err}");
    plan
}

/// `q`-quantile of |x|.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Runs the plan and checks every output against onnxruntime's.
fn run_and_compare(plan_path: &Path, ref_dir: &Path, label: &str, activations: bool) -> Plan {
    let LoadedPlan { plan, store } = open_plan(plan_path, None).unwrap_or_else(|e| panic!("{e}"));
    let inputs = npys(ref_dir, "input_");
    let (got, _) = run_plan(&plan, &store, &inputs, &RunOptions::default())
        .unwrap_or_else(|e| panic!("{label}: run: {e}"));
    let (want, float) = (npys(ref_dir, "ort_output_"), npys(ref_dir, "float_output_"));
    for (t, value) in plan.graph.outputs.iter().zip(&got) {
        let name = sanitize(&plan.graph.tensor(*t).name);
        let (q, f) = (want[&name].to_f64_vec(), float[&name].to_f64_vec());
        let a = value.to_f64_vec();
        assert_eq!(a.len(), q.len(), "{label}: {name}: elements");
        let scale = q.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
        let diffs: Vec<f64> = a.iter().zip(&q).map(|(x, y)| (x - y).abs()).collect();
        let max = diffs.iter().fold(0f64, |m, &d| m.max(d));
        let quant_err = q
            .iter()
            .zip(&f)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        let median = quantile(diffs, 0.5);
        println!(
            "{label}: {name}: max |diff| {:.2e}, median {:.2e} (of max |ref| {scale:.2e}); \
             quantisation moved the output by {:.2e}",
            max / scale,
            median / scale,
            quant_err / scale
        );
        assert!(
            a.iter().all(|x| x.is_finite()),
            "{label}: {name}: non-finite"
        );
        if activations {
            assert!(
                median <= MEDIAN_TOLERANCE * scale && max <= OF_QUANTISATION_ERROR * quant_err,
                "{label}: {name}: max |diff| {max:e}, median {median:e}; quantisation error \
                 {quant_err:e}, max |ref| {scale:e}"
            );
        } else {
            assert!(
                max <= WEIGHT_ONLY_TOLERANCE * scale,
                "{label}: {name} differs from onnxruntime by {max:e} (max |ref| {scale:e})"
            );
        }
    }
    plan
}

/// Every quantised weight is stored at `bits` per element (packed below 8), and its stored
/// bytes are at most those bits plus an f32 scale and a zero point per block (or per
/// column); returns the number of quantised weights.
fn check_storage(plan: &Plan, label: &str, bits: u32, block: usize) -> usize {
    let mut n = 0;
    for w in plan.graph.weights.values().filter(|w| w.quant.is_some()) {
        n += 1;
        let numel = tessera_ir::numel(&w.shape) as f64;
        let packed = w.packed_bits.map_or(8, u32::from);
        // Embedding tables quantised per tensor by quantize_dynamic are 8-bit whatever the
        // variant; the MatMul weights are `bits` wide.
        assert!(
            packed == bits || packed == 8,
            "{label}: '{}' stored at {packed} bits, expected {bits}",
            w.name
        );
        let per_block = if block > 0 { 5.0 / block as f64 } else { 0.0 };
        let per_column = if block > 0 {
            0.0
        } else {
            5.0 * w.shape.iter().copied().max().unwrap_or(1) as f64
        };
        let bound = numel * (packed as f64 / 8.0 + per_block) + per_column + 8.0;
        assert!(
            (w.size_bytes() as f64) <= bound,
            "{label}: '{}' {:?} counts {} bytes, more than {bound} for {packed}-bit values",
            w.name,
            w.shape,
            w.size_bytes()
        );
    }
    assert!(n > 0, "{label}: no quantised weight in the plan");
    n
}

/// Every MatMul of a quantised weight reads a Dequantize of an 8-bit activation: the
/// canonical quantised product the runtime's integer GEMM runs, whatever the spelling
/// (QDQ's QuantizeLinear / DequantizeLinear pairs, or DynamicQuantizeLinear, MatMulInteger,
/// the Cast to int32 and back and the scale product after it). Returns how many.
fn check_quantised_products(plan: &Plan, label: &str) -> usize {
    let g = &plan.graph;
    let mut producer = std::collections::HashMap::new();
    for id in g.node_ids() {
        for t in &g.node(id).outputs {
            producer.insert(*t, id);
        }
    }
    let mut n = 0;
    for id in g.node_ids() {
        let node = g.node(id);
        let (tessera_ir::Op::MatMul(_), [a, b]) = (&node.op, &node.inputs[..]) else {
            continue;
        };
        if g.weights.get(b).is_none_or(|w| w.quant.is_none()) {
            continue;
        }
        let d = producer.get(a).map(|&p| g.node(p));
        let ok = d.is_some_and(|d| {
            matches!(d.op, tessera_ir::Op::Dequantize)
                && matches!(
                    g.tensor(d.inputs[0]).dtype,
                    tessera_ir::DType::U8 | tessera_ir::DType::I8
                )
        });
        assert!(
            ok,
            "{label}: MatMul '{}' of a quantised weight reads no Dequantize",
            node.name
        );
        n += 1;
    }
    assert!(n > 0, "{label}: no quantised product");
    n
}

#[test]
fn onnxruntime_quantised_models_run_equal_on_1_2_and_3_devices() {
    let Some(zoo) = zoo_dir() else {
        eprintln!(
            "SKIP ort_quantised: no zoo.json in $TESSERA_ZOO or .cache/zoo (run scripts/setup.sh)"
        );
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    if !generate(&zoo, tmp.path()) {
        return;
    }
    for family in FAMILIES {
        for (variant, activations, bits, block) in VARIANTS {
            let model = format!("{family}__{variant}");
            for n in [1, 2, 3] {
                let label = format!("{model} N={n}");
                let plan_path = compile(tmp.path(), &model, n);
                let plan =
                    run_and_compare(&plan_path, &tmp.path().join(&model), &label, activations);
                let quantised = check_storage(&plan, &label, bits, block);
                if activations && bits == 8 {
                    let products = check_quantised_products(&plan, &label);
                    println!("{label}: {products} quantised products");
                }
                let whole = plan.graph.weight_bytes() as f64;
                let held = max_param_bytes(&plan) as f64;
                println!(
                    "{label}: {quantised} quantised weights; a rank holds {held} of {whole} bytes ({:.2})",
                    held / whole
                );
                if n == 2 {
                    assert!(
                        held <= MAX_SHARE_AT_2 * whole,
                        "{label}: a rank holds {held} of the model's {whole} stored bytes"
                    );
                    // Both layers are found, QDQ forms included (llama's quantised rotary
                    // tables are looked up at constant positions and hoisted).
                    assert_eq!(
                        plan.layers.as_ref().map(|l| l.count),
                        Some(2),
                        "{label}: repeated layers"
                    );
                }
            }
        }
    }
}
