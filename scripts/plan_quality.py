#!/usr/bin/env python3
"""Plan quality of every example model (and MiniLM when fetched), as a Markdown table.

Usage: python3 scripts/plan_quality.py [--devices 2,4,8]   (builds target/release/tessera first)

For each model and device count: compiles with the default objective (memory) and cost model
(cpu), then reads `tessera inspect PLAN --json`: collectives by kind, bytes moved against the
lower bound, parameter bytes per device against the whole model, repeated layers, compile time.
"""
import argparse
import json
import os
import subprocess
import tempfile
from math import prod

SIZE = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "bool": 1}

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MODELS = [
    ("mlp", "examples/models/mlp.onnx", "x=4x64"),
    ("mlp_gemm", "examples/models/mlp_gemm.onnx", "x=8x64"),
    ("sdpa_2l", "examples/models/sdpa_2l.onnx", "x=2x16x64"),
    ("gpt2_1l", "examples/models/gpt2_1l.onnx", "input_ids=2x16"),
    ("gpt2_4l", "examples/models/gpt2_4l.onnx", "input_ids=2x16"),
    ("llama_1l", "examples/models/llama_1l.onnx", "input_ids=2x16"),
    ("llama_4l", "examples/models/llama_4l.onnx", "input_ids=2x16"),
    ("MiniLM-L3", ".cache/models/paraphrase-MiniLM-L3-v2.onnx", "input_ids=1x128,attention_mask=1x128"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="2,4,8")
    a = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "tessera"], cwd=ROOT)
    exe = os.path.join(ROOT, "target/release/tessera")
    print("| model | N | layers | all-reduce | all-gather | reduce-scatter | all-to-all | bytes moved / lower bound | params per device / whole model | compile ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, shape in MODELS:
            model = os.path.join(ROOT, path)
            if not os.path.exists(model):
                continue
            for n in [int(x) for x in a.devices.split(",")]:
                plan = os.path.join(tmp, f"{name}_{n}.json")
                subprocess.check_call([exe, "compile", model, "--devices", str(n), "--shape", shape, "-o", plan],
                                      stdout=subprocess.DEVNULL)
                r = json.loads(subprocess.check_output([exe, "inspect", plan, "--json"]))
                t = r["totals"]
                moved = sum(t[k]["bytes"] for k in t)
                weights = json.load(open(plan))["graph"]["weights"].values()
                whole = sum(SIZE[w["dtype"]] * prod(w["shape"]) for w in weights)
                params = max(p["param_bytes"] for p in r["per_rank"])
                layers = r["layers"] if r["layers"] is not None else "-"
                cnt = lambda k: f'{t[k]["count"]}'
                print(f"| {name} | {n} | {layers} | {cnt('all_reduce')} | {cnt('all_gather')} | {cnt('reduce_scatter')} | "
                      f"{cnt('all_to_all')} | {moved} / {r['lower_bound_bytes']} | {params / whole:.3f} | {r['compile_ms']:.0f} |")


if __name__ == "__main__":
    main()
