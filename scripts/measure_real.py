#!/usr/bin/env python3
"""Compile every export of tests/data/real at batch 8 x seq 128 for N = 2, 4, 8 devices with the
release `tessera` binary (each compile under `timeout 120`) and print a Markdown table: compile
wall time, collective bytes (`tessera inspect --json`: total_bytes), ring bytes sent per rank
and parameter bytes per rank (the plan's estimates; equal on every rank unless shown as
min-max).

Usage: cargo build --release --bin tessera && python3 scripts/measure_real.py [MODEL...]
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TESSERA = os.path.join(ROOT, "target/release/tessera")
DATA = os.path.join(ROOT, "tests/data/real")
LIMIT_S = 120


def kib(b):
    return f"{b / 1024:.1f} KiB"


def per_rank(values):
    lo, hi = min(values), max(values)
    return kib(lo) if lo == hi else f"{kib(lo)}–{kib(hi)}"


def main():
    names = sys.argv[1:] or sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(DATA, "*.onnx")))
    print("| model | N | compile | collective bytes | ring bytes sent / rank | params / rank |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            inputs = sorted(f[6:-4] for f in os.listdir(os.path.join(DATA, name)) if f.startswith("input_"))
            shapes = [a for i in inputs for a in ("--shape", f"{i}=8x128")]
            for n in (2, 4, 8):
                plan = os.path.join(tmp, f"{name}_{n}.json")
                cmd = ["timeout", str(LIMIT_S), TESSERA, "compile", os.path.join(DATA, f"{name}.onnx"),
                       "--devices", str(n), "-o", plan] + shapes
                t0 = time.monotonic()
                r = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.monotonic() - t0
                if r.returncode == 124:
                    print(f"| {name} | {n} | > {LIMIT_S} s | | | |", flush=True)
                    continue
                if r.returncode != 0:
                    err = (r.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"| {name} | {n} | failed: {err} | | | |", flush=True)
                    continue
                rep = json.loads(subprocess.run([TESSERA, "inspect", plan, "--json"], capture_output=True,
                                                text=True, check=True).stdout)
                est = json.load(open(plan))["estimates"]
                print(f"| {name} | {n} | {wall:.1f} s | {kib(rep['total_bytes'])} | "
                      f"{per_rank([e['comm_bytes'] for e in est])} | "
                      f"{per_rank([e['param_bytes'] for e in est])} |", flush=True)


if __name__ == "__main__":
    main()
