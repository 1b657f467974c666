#!/usr/bin/env python3
"""Compile every export-zoo model at its compile shape (batch 8 x seq 128) for N = 2, 4, 8
and print a Markdown table: compile time, collective bytes against the Megatron-style hand
plan, parameter bytes per rank against model bytes / N.

Usage: python3 scripts/zoo_bench.py [ZOO_DIR] [JOBS]   (default: .cache/zoo, see
scripts/setup.sh; JOBS compiles at a time, default 1: more is faster but inflates the times)

Builds `cargo build --release` first; each compile runs under `timeout 120` (a compile that
runs out of time is reported as "> 120 s"). Collective bytes are logical bytes (the sum of the
tensors moved), as zoo.json's Megatron figures are.
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 120
DEVICES = (2, 4, 8)


def compile_one(zoo, model, n, out):
    plan = os.path.join(out, f"{model['dir']}.n{n}.json")
    args = ["timeout", str(TIMEOUT_S), os.path.join(ROOT, "target/release/tessera"), "compile",
            os.path.join(zoo, model["file"]), "--devices", str(n), "--shape", model["compile_shapes"], "-o", plan]
    t0 = time.monotonic()
    r = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms = (time.monotonic() - t0) * 1e3
    if r.returncode == 124:
        return None, None
    if r.returncode != 0:
        return ms, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    with open(plan) as f:
        return ms, json.load(f)


def main():
    zoo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".cache/zoo")
    with open(os.path.join(zoo, "zoo.json")) as f:
        index = json.load(f)
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    b, s = index["compile_batch_seq"]
    print(f"Compile shape {b}x{s}; collective bytes are logical bytes; Megatron: {index['megatron_formula']}.\n")
    print("| family | variant | N | compile ms | collective bytes / Megatron | params per rank / (model/N) |")
    print("|---|---|---|---|---|---|")
    jobs = [(m, n) for m in index["models"] for n in DEVICES]
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory() as out, concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for (model, n), (ms, plan) in zip(jobs, pool.map(lambda j: compile_one(zoo, j[0], j[1], out), jobs)):
            fam = model["family"]
            mega = index["families"][fam]["megatron"][f"{b}x{s}"][str(n)]["logical_bytes"]
            if plan is None:
                row = [f"> {TIMEOUT_S} s", "-", "-"]
            elif isinstance(plan, str):
                row = [f"{ms:.0f} (failed: {plan})", "-", "-"]
            else:
                moved = sum(c["bytes"] for c in plan["collectives"])
                params = max(e["param_bytes"] for e in plan["estimates"])
                share = model["param_bytes"] / n
                row = [f"{ms:.0f}", f"{moved} / {mega} = {moved / mega:.2f}",
                       f"{params} / {share:.0f} = {params / share:.2f}"]
            print(f"| {fam} | {model['variant']} | {n} | " + " | ".join(row) + " |", flush=True)

if __name__ == "__main__":
    main()
