#!/usr/bin/env python3
"""Compile every export of tests/data/real at batch 8 x seq 128 for N = 2, 4, 8 with two
`tessera` binaries back to back per row (a before and an after build) and print a Markdown
table: compile wall time (extractor, gap), ring bytes against the Megatron-style plan
(`tessera inspect`) and parameter bytes of the largest rank.

Usage: python3 scripts/compare_real_compile.py OLD_TESSERA [NEW_TESSERA]
(NEW_TESSERA defaults to target/release/tessera)
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def one(binary, model, n, shapes, plan):
    t0 = time.monotonic()
    subprocess.run([binary, "compile", model, "--devices", str(n), *shapes, "-o", plan],
                   capture_output=True, check=True, timeout=120)
    dt = time.monotonic() - t0
    p = json.load(open(plan))
    out = subprocess.run([binary, "inspect", plan], capture_output=True, text=True).stdout
    ratio = [l.split("(")[-1].rstrip(")") for l in out.splitlines() if "Megatron" in l]
    s = p["search"]
    return (f"{dt:.2f} s ({s['extractor']['kind']}, gap {100 * s['gap']:.1f} %)",
            ratio[0] if ratio else "-", p["estimates"][0]["param_bytes"] / 1024)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    old = sys.argv[1]
    new = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/release/tessera")
    print("| model | N | before | after | ring bytes vs Megatron | params / rank |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        plan = os.path.join(tmp, "plan.json")
        for f in sorted(glob.glob(os.path.join(ROOT, "tests/data/real/*.onnx"))):
            name = os.path.basename(f)[:-5]
            inputs = sorted(x[6:-4] for x in os.listdir(f[:-5]) if x.startswith("input_"))
            shapes = [a for i in inputs for a in ("--shape", f"{i}=8x128")]
            for n in (2, 4, 8):
                try:
                    a = one(old, f, n, shapes, plan)
                    b = one(new, f, n, shapes, plan)
                except subprocess.CalledProcessError as e:
                    # Inputs that are not [8, 128] token ids (CLIP's pixels): not compared.
                    print(f"| {name} | {n} | not compiled at 8x128: {e.stderr.strip()[-90:]} |||",
                          flush=True)
                    continue
                print(f"| {name} | {n} | {a[0]} | {b[0]} | {a[1]} → {b[1]} | "
                      f"{a[2]:.1f} → {b[2]:.1f} KiB |", flush=True)


if __name__ == "__main__":
    main()
