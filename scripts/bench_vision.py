#!/usr/bin/env python3
"""Vision latency against onnxruntime at the same thread count, alternating in one run.

Usage: python3 scripts/bench_vision.py DIR [--bins BIN_DIR ...] [--models resnet18,...]
                                      [--devices 1,2] [--repeat 10] [--rounds 2]

DIR holds scripts/export_vision.py exports (NAME.onnx and NAME/input_*.npy; for batch 8
export with BATCH = 8 into a scratch directory, never over .cache/vision). For every model
and device count N: `tessera compile --devices N` with the input's shape, then per round
each `tessera-run PLAN --check --tolerance 1e-4 --repeat R --threads-per-device 1` (one
binary directory per --bins, e.g. a baseline build and the current one; the tolerance is
tests/vision_exports.rs's: kernels that sum in another order than the reference
executor's, the direct Conv, differ from it as onnxruntime does, LR-ASPP's logits by 2.5e-5
of their largest) and onnxruntime with N intra-op threads
(sequential, one warm-up then R runs), alternating. Prints min / median ms per round,
then per model, device count and runtime the smallest of the rounds' medians and its ratio
to onnxruntime's (on a host whose neighbours come and go, a round's median can move 2x:
the quietest round of each is the comparable figure).
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, env=None):
    res = subprocess.run(cmd, text=True, capture_output=True, env=env)
    if res.returncode != 0:
        sys.exit(f"bench_vision: failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return res.stdout + res.stderr


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
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--bins", nargs="+", default=[os.path.join(ROOT, "target/release")])
    ap.add_argument("--models", default="resnet18,mobilenet_v3_small")
    ap.add_argument("--devices", default="1,2")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = os.path.join(args.dir, f"{name}.onnx")
            inputs = sorted(glob.glob(os.path.join(args.dir, name, "input_*.npy")))
            feeds = {os.path.basename(p)[6:-4]: np.load(p) for p in inputs}
            spec = ",".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())
            for dev in args.devices.split(","):
                plan = os.path.join(tmp, f"{name}_{dev}.json")
                sh([os.path.join(args.bins[-1], "tessera"), "compile", model, "--devices", dev,
                    "--shape", spec, "-o", plan])
                meds = {}
                for rnd in range(args.rounds):
                    cells = []
                    for b in args.bins:
                        cmd = [os.path.join(b, "tessera-run"), plan, "--model", model, "--check",
                               "--tolerance", "1e-4", "--repeat", str(args.repeat), "--threads-per-device", "1"]
                        for k, p in zip(feeds, inputs):
                            cmd += ["--input", f"{k}={p}"]
                        out = sh(cmd)
                        m = re.search(r"latency over \d+ runs: min ([\d.]+) ms, median ([\d.]+) ms", out)
                        if not m or "check passed" not in out:
                            sys.exit(f"bench_vision: unexpected tessera-run output:\n{out}")
                        cells.append(f"{os.path.basename(os.path.dirname(b + '/'))} {m.group(1)} / {m.group(2)}")
                        meds.setdefault(b, []).append(float(m.group(2)))
                    o_min, o_med = ort_latency(model, feeds, int(dev), args.repeat)
                    cells.append(f"ort {o_min:.2f} / {o_med:.2f}")
                    meds.setdefault("ort", []).append(o_med)
                    print(f"{name} N={dev} round {rnd}: " + " | ".join(cells), flush=True)
                best = {k: min(v) for k, v in meds.items()}
                summary = [f"{k} {v:.3f} ({v / best['ort']:.2f})" for k, v in best.items() if k != "ort"]
                print(f"{name} N={dev} quietest-round medians: " + " | ".join(summary)
                      + f" | ort {best['ort']:.3f}", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average after: {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
