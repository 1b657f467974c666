#!/usr/bin/env python3
"""MiniLM latency: Tessera's CPU runtime vs onnxruntime, measured in the same run.

Usage (one command, from the repository root):

    python3 scripts/bench_runtime.py [--model .cache/models/paraphrase-MiniLM-L3-v2.onnx]
                                     [--data .cache/models/minilm] [--repeat 20]
                                     [--devices 1,2,2x1] [--batches 1,8] [--markdown]
                                     [--features FEATURES]

For each batch (B×128 real token ids from DATA/b<B>/{input_ids,attention_mask}.npy, made by
scripts/setup.sh) and each device count N (or data x tensor mesh DxT: N = D*T devices, the
batch split over D groups, `tessera compile --mesh DxT`) it:
  1. builds release binaries once (cargo build --release -p tessera -p tessera-runtime),
  2. compiles a plan:  tessera compile MODEL --devices N --shape ... -o PLAN,
  3. runs            tessera-run PLAN --input ... --check --repeat R   (one warm-up run, then R),
  4. runs onnxruntime on the same inputs with intra_op_num_threads = N (Tessera runs one thread
     per device, so both use N cores), sequential execution, one warm-up, then R runs,
and prints a table (min / median ms). --markdown prints it as a Markdown table for
docs/benchmarks.md.

Both keep weights resident: Tessera decodes each rank's weight slices on the first run
(WeightStore::load_resident) and later runs share them, so the repeats measure the steady
state, as onnxruntime's. Tessera's kernels are single-threaded per device (N devices = N
threads); onnxruntime gets intra_op_num_threads = N. Set TESSERA_PROFILE=1 to have tessera-run
print time per op kind per rank.
"""
import argparse
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/models/paraphrase-MiniLM-L3-v2.onnx"))
    ap.add_argument("--data", default=os.path.join(ROOT, ".cache/models/minilm"))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--devices", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--features", default="", help="cargo features of tessera-runtime to build with")
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        sys.exit(f"bench_runtime: {args.model} not found (run scripts/setup.sh)")

    feats = ["--features", ",".join(f"tessera-runtime/{f}" for f in args.features.split(",") if f)] if args.features else []
    sh(["cargo", "build", "--release", "-q", "-p", "tessera", "-p", "tessera-runtime"] + feats)
    tessera = os.path.join(ROOT, "target/release/tessera")
    tessera_run = os.path.join(ROOT, "target/release/tessera-run")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in [int(x) for x in args.batches.split(",")]:
            data = os.path.join(args.data, f"b{b}")
            names = ["input_ids", "attention_mask"]
            files = {n: os.path.join(data, f"{n}.npy") for n in names}
            feeds = {n: np.load(f) for n, f in files.items()}
            spec = ",".join(f"{n}={'x'.join(map(str, feeds[n].shape))}" for n in names)
            for dev in args.devices.split(","):
                # N devices, or a data x tensor mesh DxT (D*T devices, batch split over D).
                if "x" in dev:
                    d, t = (int(v) for v in dev.split("x"))
                    n, flag = d * t, ["--mesh", dev]
                else:
                    n, flag = int(dev), ["--devices", dev]
                plan = os.path.join(tmp, f"minilm_b{b}_n{dev}.json")
                sh([tessera, "compile", args.model] + flag + ["--shape", spec, "-o", plan])
                cmd = [tessera_run, plan, "--model", args.model, "--check", "--repeat", str(args.repeat)]
                for name, f in files.items():
                    cmd += ["--input", f"{name}={f}"]
                out = sh(cmd)
                m = re.search(r"latency over \d+ runs: min ([\d.]+) ms, median ([\d.]+) ms", out)
                if not m or "check passed" not in out:
                    sys.exit(f"bench_runtime: unexpected tessera-run output:\n{out}")
                t_min, t_med = float(m.group(1)), float(m.group(2))
                o_min, o_med = ort_latency(args.model, feeds, n, args.repeat)
                rows.append((f"{b}x128", dev if "x" in dev else n, t_min, t_med, o_min, o_med))

    if args.markdown:
        print("| input | devices (= ORT threads) | Tessera min ms | Tessera median ms | ORT min ms | ORT median ms |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} |")
    else:
        print(f"{'input':>8} {'devices':>7} {'tessera min':>12} {'median':>9} {'ort min':>9} {'median':>9}")
        for r in rows:
            print(f"{r[0]:>8} {r[1]:>7} {r[2]:>12.2f} {r[3]:>9.2f} {r[4]:>9.2f} {r[5]:>9.2f}")
    print(f"(ms; {args.repeat} runs after one warm-up; machine: {os.cpu_count()} cores; Tessera: one thread "
          "per device; onnxruntime: intra_op_num_threads = devices; weights resident in both)")


if __name__ == "__main__":
    main()
