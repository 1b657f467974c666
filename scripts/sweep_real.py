#!/usr/bin/env python3
"""Sweep real exports: import, partition, run and compare every model of a directory.

Usage: python3 scripts/sweep_real.py [--devices 1,2,4] DIR [NAME...]
       (DIR as written by scripts/export_real.py, e.g. `export_real.py --extra /tmp/sweep`)

For each DIR/NAME.onnx with NAME/input_*.npy and NAME/ort_output_*.npy (onnxruntime's outputs;
NAME/torch_output_*.npy, PyTorch's, where onnxruntime cannot run the export):
  1. compiles at the inputs' shape for each N of --devices (default 1, 2, 4; default objective), runs the plan with
     tessera-run on N CPU devices and prints the largest difference to onnxruntime's outputs
     (OK at <= 1e-4);
     Image models (a 4-D input, scripts/export_vision.py sweep) are compared relative to the
     largest |output| (OK at <= 1e-4 relative, as random-weight CNNs reach logits of 1e3);
  2. compiles at batch 8 x seq 128 (a dim the export fixes stays; image models: at the exported input's shape, whose batch
     the exporter fixes) for N = 2, 4, 8 and prints the compile time, ring bytes
     against tessera inspect's Megatron-style plan, the search's gap, repeated layers found
     and rank 0's parameters.
Needs release builds of tessera and tessera-run (cargo build --release -p tessera -p tessera-runtime --bins).
"""
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TESSERA = os.path.join(ROOT, "target/release/tessera")
RUN = os.path.join(ROOT, "target/release/tessera-run")
TOLERANCE = 1e-4


def inputs_of(d, name):
    return {os.path.basename(p)[len("input_"):-len(".npy")]: p
            for p in sorted(glob.glob(os.path.join(d, name, "input_*.npy")))}


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def compile_plan(model, n, shapes, plan):
    args = [TESSERA, "compile", model, "--devices", str(n), "-o", plan]
    for k, s in shapes.items():
        args += ["--shape", f"{k}={s}"]
    t = time.time()
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    return p, time.time() - t


def check_accuracy(d, name, tmp, devices):
    ins = inputs_of(d, name)
    shapes = {k: "x".join(map(str, np.load(p).shape)) for k, p in ins.items()}
    for n in devices:
        plan = os.path.join(tmp, f"{name}_{n}.json")
        p, _ = compile_plan(os.path.join(d, f"{name}.onnx"), n, shapes, plan)
        if p.returncode:
            return f"N={n}: compile failed: {last_line(p.stderr)}"
        out = os.path.join(tmp, f"{name}_{n}_out")
        args = [RUN, plan, "-o", out] + sum([["-i", f"{k}={v}"] for k, v in ins.items()], [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if r.returncode:
            return f"N={n}: run failed: {last_line(r.stderr)}"
        worst, scale = 0.0, 0.0
        # onnxruntime's outputs; PyTorch's where onnxruntime could not run the export.
        refs = glob.glob(os.path.join(d, name, "ort_output_*.npy")) or \
            glob.glob(os.path.join(d, name, "torch_output_*.npy"))
        if not refs:
            return "no reference outputs"
        for ref in refs:
            want = np.load(ref)
            got = np.load(os.path.join(out, os.path.basename(ref).split("_output_", 1)[1]))
            if got.shape != want.shape:
                return f"N={n}: output shape {got.shape} != {want.shape}"
            worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()))
            scale = max(scale, float(np.abs(want).max()))
        if image_model(d, name):
            worst /= max(scale, 1e-30)
        if worst > TOLERANCE:
            return f"N={n}: max {kind(d, name)} to the reference {worst:.2e} (MISMATCH)"
    return f"N={','.join(map(str, devices))} OK (max {kind(d, name)} <= {TOLERANCE:g}{', against PyTorch' if 'torch_output' in refs[0] else ''})"


def plan_shape(d, name, input_name):
    """Batch 8 x seq 128, except where the export fixes a dim (Funnel and Mamba fix the
    sequence they were traced at)."""
    import onnx
    m = onnx.load(os.path.join(d, f"{name}.onnx"), load_external_data=False)
    dims = next((i.type.tensor_type.shape.dim for i in m.graph.input if i.name == input_name), [])
    want = [8, 128] + [0] * max(0, len(dims) - 2)  # dims past the second: as exported
    return [dv.dim_value if dv.dim_value > 0 else w for dv, w in zip(dims, want)] or want[:2]


def image_model(d, name):
    """Whether the model reads an image batch (a 4-D input)."""
    return any(np.load(p, mmap_mode="r").ndim == 4 for p in inputs_of(d, name).values())


def kind(d, name):
    return "relative diff" if image_model(d, name) else "abs diff"


def check_plans(d, name, tmp):
    rows = []
    if image_model(d, name):
        shapes = {k: "x".join(map(str, np.load(p, mmap_mode="r").shape))
                  for k, p in inputs_of(d, name).items()}
    else:
        shapes = {k: "x".join(map(str, plan_shape(d, name, k))) for k in inputs_of(d, name)}
    for n in (2, 4, 8):
        plan = os.path.join(tmp, f"{name}_8x128_{n}.json")
        p, secs = compile_plan(os.path.join(d, f"{name}.onnx"), n, shapes, plan)
        if p.returncode:
            rows.append(f"{'/'.join(shapes.values())} N={n} compile failed: {last_line(p.stderr)}")
            continue
        text = subprocess.run([TESSERA, "inspect", plan], capture_output=True, text=True).stdout
        ratio = re.search(r"Megatron [^(]*\(([\d.]+)×\)", text)
        gap = re.search(r"gap ([\d.]+)%", text)
        layers = re.search(r"(?:repeated )?layers: (\S+(?: blocks that differ)?)", text)
        params = re.search(r"^\s+0\s+([\d.]+ [KMG]?i?B)", text, re.M)
        rows.append(f"{'/'.join(shapes.values())} N={n} {secs:.2f} s, Megatron x{ratio.group(1) if ratio else '-'}, "
                    f"gap {gap.group(1) if gap else '-'}%, layers {layers.group(1) if layers else '-'}, "
                    f"rank 0 params {params.group(1) if params else '-'}")
    return rows


def main():
    args = sys.argv[1:]
    devices = [1, 2, 4]
    if args[:1] == ["--devices"] and len(args) >= 2:
        devices = [int(x) for x in args[1].split(",")]
        args = args[2:]
    if not args:
        sys.exit(__doc__)
    d = args[0]
    names = args[1:] or sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(d, "*.onnx")))
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"{name}: {check_accuracy(d, name, tmp, devices)}", flush=True)
            for row in check_plans(d, name, tmp):
                print(f"  {row}", flush=True)


if __name__ == "__main__":
    main()
