#!/usr/bin/env python3
"""Issue 15's plan bars for every example and export-zoo model at N = 1..8.

Usage: python3 scripts/device_sweep.py [--objective OBJ] [--devices 1,2,...,8] [--jobs 2]
       (needs target/release/tessera: cargo build --release -p tessera; and .cache/zoo,
       written by scripts/setup.sh)

Compiles each example model (scripts/plan_quality.py's list and shapes, MiniLM when fetched) and
each zoo model (at zoo.json's compile shape, 8x128) for every N, reads `tessera inspect
--json`, and prints per plan:
  * the largest rank's parameters as a share of the model's matrices per rank, vectors
    (norm scales, biases: initializers with at most one axis longer than 1) aside:
    (params - vectors) * N / matrices, the bar being 1.25;
  * the plan's ring bytes per rank against inspect's Megatron-style plan (the bar: at most
    1.0 where the reference exists; N = 1 moves nothing).
Rows that miss a bar are marked and listed at the end. Plans only: nothing runs.
"""
import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import tempfile

import numpy as np
import onnx

from plan_quality import MODELS as EXAMPLES  # the example models and their shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESSERA = os.path.join(ROOT, "target/release/tessera")
# Bytes per element of ONNX TensorProto data types (float, uint8, int8, int32, int64,
# float16, double, bfloat16).
ELEM_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 10: 2, 11: 8, 16: 2}
PARAM_BAR = 1.25


def models():
    found = [(n, os.path.join(ROOT, p), s) for n, p, s in EXAMPLES
             if os.path.isfile(os.path.join(ROOT, p))]
    zoo = os.path.join(ROOT, ".cache/zoo")
    index = os.path.join(zoo, "zoo.json")
    if os.path.isfile(index):
        with open(index) as f:
            for m in json.load(f)["models"]:
                found.append((m["dir"], os.path.join(zoo, m["file"]), m["compile_shapes"]))
    else:
        print(f"(no export zoo at {zoo}: examples only)")
    return found


def matrix_and_vector_bytes(path):
    """Stored bytes of the initializers with two or more axes longer than 1, and of the rest."""
    model = onnx.load(path, load_external_data=False)
    mat = vec = 0
    for t in model.graph.initializer:
        size = int(np.prod(t.dims)) * ELEM_BYTES.get(t.data_type, 4)
        if sum(1 for d in t.dims if d > 1) >= 2:
            mat += size
        else:
            vec += size
    return mat, vec


def compile_and_inspect(job, objective):
    name, path, shapes, n = job
    with tempfile.TemporaryDirectory() as d:
        plan = os.path.join(d, "plan.json")
        args = [TESSERA, "compile", path, "--devices", str(n), "--shape", shapes, "-o", plan]
        if objective:
            args += ["--objective", objective]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode:
            return job, None, (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        out = subprocess.run([TESSERA, "inspect", plan, "--json"], capture_output=True, text=True)
        return job, json.loads(out.stdout), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objective", default=None,
                    help="tessera compile --objective (default: its default)")
    ap.add_argument("--devices", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    devices = [int(x) for x in a.devices.split(",")]
    found = models()
    sizes = {p: matrix_and_vector_bytes(p) for _, p, _ in found}
    jobs = [(name, path, shapes, n) for name, path, shapes in found for n in devices]
    misses = []
    with cf.ThreadPoolExecutor(a.jobs) as pool:
        results = pool.map(lambda j: compile_and_inspect(j, a.objective), jobs)
        for (name, path, _, n), report, err in results:
            if err:
                misses.append(f"{name} N={n}: compile failed: {err}")
                print(misses[-1], flush=True)
                continue
            mat, vec = sizes[path]
            params = max(r["param_bytes"] for r in report["per_rank"])
            share = (params - vec) * n / mat if mat else 0.0
            mega = report.get("megatron") or {}
            ring, ref = mega.get("plan_ring_bytes_per_rank", 0), mega.get("ring_bytes_per_rank", 0)
            ring_ok = n == 1 or ref == 0 or ring <= ref
            params_ok = params <= PARAM_BAR * mat / n + vec
            ratio = f"{ring / ref:5.2f}" if ref else "    -"
            mark = "" if ring_ok and params_ok else "  <-- " + " ".join(
                w for w, ok in (("params", params_ok), ("ring", ring_ok)) if not ok)
            print(f"{name:22} N={n}  params {share:5.2f}/N of the matrices  ring {ring:9d} / "
                  f"Megatron {ref:9d} = {ratio}{mark}", flush=True)
            if mark:
                misses.append(f"{name} N={n}{mark}")
    print(f"\n{len(misses)} of {len(jobs)} plans miss a bar")
    for m in misses:
        print("  " + m)


if __name__ == "__main__":
    main()
