#!/usr/bin/env python3
"""Latency: Tessera's CPU runtime vs onnxruntime, measured in the same run, same inputs.

Usage (one command, from the repository root):

    python3 scripts/bench_runtime.py [--suite minilm,zoo,real] [--filter REGEX]
                                     [--repeat 10] [--devices 1,2,2x1] [--batches 1,8]
                                     [--threads-per-device K] [--markdown] [--json FILE]
                                     [--features FEATURES] [--no-build]

Suites (default: all three):
  minilm  MiniLM-L3 (.cache/models/paraphrase-MiniLM-L3-v2.onnx), real WordPiece token ids
          from .cache/models/minilm/b<B>/{input_ids,attention_mask}.npy (scripts/setup.sh);
  zoo     every model of the export zoo (.cache/zoo/zoo.json, scripts/gen_zoo.py: mlp, bert,
          gpt2, llama × their export idioms, int8 variants included);
  real    the torch dynamo exports of tests/data/real (scripts/export_real.py);
  ortq    the zoo's gpt2, bert and llama quantised by onnxruntime's own tools
          (.cache/ortq, written by scripts/gen_ort_quant.py when missing).
Zoo and real models get B×128 inputs made here from a fixed seed (token ids, encoder and
decoder, below the models' vocabulary of 256, an attention mask with the last 5 tokens of
the second sentence padded, position ids 0..127, float activations for the MLPs).

For each model, batch B (input B×128) and device count N (or data x tensor mesh DxT: N = D*T
devices, the batch split over D groups, `tessera compile --mesh DxT`) it:
  1. builds release binaries once (cargo build --release -p tessera -p tessera-runtime),
  2. compiles a plan:  tessera compile MODEL --devices N --shape ... -o PLAN,
  3. runs            tessera-run PLAN --input ... --check --repeat R [--threads-per-device K]
     (one warm-up run, then R; the run fails the benchmark unless --check passes),
  4. runs onnxruntime on the same inputs with intra_op_num_threads = N·K (the same total
     thread count), sequential execution, one warm-up, then R runs,
and prints a table: min / median ms of both and the ratio of the medians (Tessera /
onnxruntime). --markdown prints it as a Markdown table for docs/benchmarks.md.

Both keep weights resident: Tessera decodes each rank's weight slices on the first run
(WeightStore::load_resident) and later runs share them, so the repeats measure the steady
state, as onnxruntime's. Set TESSERA_PROFILE=1 to have tessera-run print time per op kind
per rank; set TESSERA_BIN_DIR (with --no-build) to benchmark binaries saved elsewhere.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    res = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)
    if res.returncode != 0:
        sys.exit(f"bench_runtime: command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return res.stdout


def ort_latency(model, feeds, threads, repeat):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ms.append((time.perf_counter() - t0) * 1e3)
    return min(ms), statistics.median(ms)


VOCAB = 256  # scripts/gen_zoo.py and scripts/export_real.py


def synth_inputs(names, b, s=128):
    """Deterministic B×S inputs for the zoo and the real exports (see the module doc).

    `names` maps each input to its dims after the batch as exported (None where dynamic): a
    static sequence length (CLIP's text tower) replaces S, images take their static size."""
    rng = np.random.default_rng(1234 + b)
    feeds = {}
    for name, dims in names.items():
        seq = dims[0] if dims and dims[0] else s
        if name in ("input_ids", "decoder_input_ids"):
            feeds[name] = rng.integers(0, VOCAB, size=(b, seq), dtype=np.int64)
        elif name == "attention_mask":
            m = np.ones((b, seq), dtype=np.int64)
            if b > 1:
                m[1, seq - 5:] = 0
            feeds[name] = m
        elif name == "position_ids":
            feeds[name] = np.tile(np.arange(seq, dtype=np.int64), (b, 1))
        elif name == "x":
            feeds[name] = rng.standard_normal((b, s, 64)).astype(np.float32)
        elif name == "pixel_values" and dims and all(dims):
            feeds[name] = rng.standard_normal((b, *dims)).astype(np.float32)
        else:
            sys.exit(f"bench_runtime: no input generator for '{name}'")
    return feeds


def model_inputs(path):
    """Each graph input's dims after the batch (None where dynamic)."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return {i.name: [d.dim_value or None for d in i.type.tensor_type.shape.dim[1:]]
            for i in m.graph.input if i.name not in inits}


def suite_models(suites, args):
    """(label, model path, function batch -> feeds) for every model of the suites."""
    out = []
    if "minilm" in suites:
        if not os.path.isfile(args.model):
            sys.exit(f"bench_runtime: {args.model} not found (run scripts/setup.sh)")

        def minilm_feeds(b):
            data = os.path.join(args.data, f"b{b}")
            return {n: np.load(os.path.join(data, f"{n}.npy")) for n in ["input_ids", "attention_mask"]}

        out.append(("minilm", args.model, minilm_feeds))
    if "zoo" in suites:
        zoo = os.path.join(ROOT, ".cache/zoo")
        with open(os.path.join(zoo, "zoo.json")) as f:
            index = json.load(f)
        for m in index["models"]:
            path = os.path.join(zoo, m["file"])
            names = model_inputs(path)
            out.append((f"zoo/{m['dir']}", path, lambda b, names=names: synth_inputs(names, b)))
    if "ortq" in suites:
        ortq = os.path.join(ROOT, ".cache/ortq")
        if not os.path.isdir(ortq):
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts/gen_ort_quant.py"),
                            os.path.join(ROOT, ".cache/zoo"), ortq], check=True)
        for f in sorted(os.listdir(ortq)):
            if f.endswith(".onnx"):
                path = os.path.join(ortq, f)
                names = model_inputs(path)
                out.append((f"ortq/{f[:-5]}", path, lambda b, names=names: synth_inputs(names, b)))
    if "real" in suites:
        real = os.path.join(ROOT, "tests/data/real")
        for f in sorted(os.listdir(real)):
            if f.endswith(".onnx"):
                path = os.path.join(real, f)
                names = model_inputs(path)
                out.append((f"real/{f[:-5]}", path, lambda b, names=names: synth_inputs(names, b)))
    if args.filter:
        out = [m for m in out if re.search(args.filter, m[0])]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="minilm,zoo,real")
    ap.add_argument("--filter", default="", help="only models whose label (e.g. zoo/gpt2__base) matches")
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/models/paraphrase-MiniLM-L3-v2.onnx"))
    ap.add_argument("--data", default=os.path.join(ROOT, ".cache/models/minilm"))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--devices", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads-per-device", type=int, default=0,
                    help="passed to tessera-run (0: its default, cores / devices; older builds: 1)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    ap.add_argument("--features", default="", help="cargo features of tessera-runtime to build with")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    args = ap.parse_args()
    suites = set(args.suite.split(","))

    feats = ["--features", ",".join(f"tessera-runtime/{f}" for f in args.features.split(",") if f)] if args.features else []
    if not args.no_build:
        sh(["cargo", "build", "--release", "-q", "-p", "tessera", "-p", "tessera-runtime"] + feats)
    # TESSERA_BIN_DIR: run other release binaries (e.g. a saved "before" build) with --no-build.
    bin_dir = os.environ.get("TESSERA_BIN_DIR", os.path.join(ROOT, "target/release"))
    tessera = os.path.join(bin_dir, "tessera")
    tessera_run = os.path.join(bin_dir, "tessera-run")
    cores = os.cpu_count() or 1

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, make_feeds in suite_models(suites, args):
            for b in [int(x) for x in args.batches.split(",")]:
                feeds = make_feeds(b)
                files = {}
                for name, arr in feeds.items():
                    files[name] = os.path.join(tmp, f"{name}_b{b}.npy")
                    np.save(files[name], arr)
                spec = ",".join(f"{n}={'x'.join(map(str, a.shape))}" for n, a in feeds.items())
                for dev in args.devices.split(","):
                    # N devices, or a data x tensor mesh DxT (D*T devices, batch split over D).
                    if "x" in dev:
                        d, t = (int(v) for v in dev.split("x"))
                        n, flag = d * t, ["--mesh", dev]
                    else:
                        n, flag = int(dev), ["--devices", dev]
                    k = args.threads_per_device or max(1, cores // n)
                    plan = os.path.join(tmp, f"plan_b{b}_n{dev}.json")
                    sh([tessera, "compile", model] + flag + ["--shape", spec, "-o", plan])
                    cmd = [tessera_run, plan, "--model", model, "--check", "--repeat", str(args.repeat)]
                    if args.threads_per_device:
                        cmd += ["--threads-per-device", str(k)]
                    for name, f in files.items():
                        cmd += ["--input", f"{name}={f}"]
                    out = sh(cmd)
                    m = re.search(r"latency over \d+ runs: min ([\d.]+) ms, median ([\d.]+) ms", out)
                    if not m or "check passed" not in out:
                        sys.exit(f"bench_runtime: unexpected tessera-run output ({label}):\n{out}")
                    t_min, t_med = float(m.group(1)), float(m.group(2))
                    threads = int(re.search(r"(\d+) thread\(s\) per device", out).group(1)) if "per device" in out else 1
                    o_min, o_med = ort_latency(model, feeds, n * threads, args.repeat)
                    row = dict(model=label, input=f"{b}x128", devices=dev, threads=n * threads, t_min=t_min,
                               t_med=t_med, o_min=o_min, o_med=o_med, ratio=t_med / o_med)
                    rows.append(row)
                    print(f"  {label} {b}x128 N={n}: tessera {t_med:.3f} ms, ort {o_med:.3f} ms, "
                          f"ratio {t_med / o_med:.2f}", file=sys.stderr, flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.markdown:
        print("| model | input | devices | threads (= ORT intra_op) | Tessera min ms | Tessera median ms "
              "| ORT min ms | ORT median ms | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['input']} | {r['devices']} | {r['threads']} | {r['t_min']:.3f} "
                  f"| {r['t_med']:.3f} | {r['o_min']:.3f} | {r['o_med']:.3f} | {r['ratio']:.2f} |")
    else:
        print(f"{'model':<24} {'input':>6} {'dev':>3} {'thr':>3} {'tessera min':>11} {'median':>9} "
              f"{'ort min':>9} {'median':>9} {'ratio':>6}")
        for r in rows:
            print(f"{r['model']:<24} {r['input']:>6} {str(r['devices']):>3} {r['threads']:>3} {r['t_min']:>11.3f} "
                  f"{r['t_med']:>9.3f} {r['o_min']:>9.3f} {r['o_med']:>9.3f} {r['ratio']:>6.2f}")
    if rows:
        ratios = sorted(r["ratio"] for r in rows)
        over = sum(1 for x in ratios if x > 1.0)
        print(f"\n{len(rows)} configurations; ratio (Tessera median / onnxruntime median): min {ratios[0]:.2f}, "
              f"median {statistics.median(ratios):.2f}, max {ratios[-1]:.2f}; {over} above 1.0")
    print(f"(ms; {args.repeat} runs after one warm-up; machine: {cores} cores; onnxruntime: intra_op_num_threads "
          "= Tessera's total threads; weights resident in both)")


if __name__ == "__main__":
    main()
