#!/usr/bin/env python3
"""Per-call overhead of a resident tessera.InferenceSession (docs/benchmarks.md).

Opens a session on examples/models/mlp.onnx at 4x64 on 2 CPU devices and times the first
run and then many later runs (min / median / mean), next to onnxruntime on the same model
and input in the same process. Needs the package installed (`python3 -m pip install .`).

    python3 scripts/bench_session.py [--calls 5000] [--devices 2] [--batch 4]
"""
import argparse
import os
import pathlib
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort

import tessera

ROOT = pathlib.Path(__file__).resolve().parents[1]


def times(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def row(label, ms):
    return (
        f"{label:<34} min {min(ms):.3f} ms  median {statistics.median(ms):.3f} ms  "
        f"mean {statistics.fmean(ms):.3f} ms  ({len(ms)} calls)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    model = ROOT / "examples" / "models" / "mlp.onnx"
    x = np.random.default_rng(0).standard_normal((args.batch, 64)).astype(np.float32)
    feeds = {"x": x}

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__}")
    print(f"model: mlp.onnx, x {args.batch}x64 float32, {args.devices} devices\n")

    t0 = time.perf_counter()
    sess = tessera.InferenceSession(str(model), devices=args.devices, shapes={"x": [args.batch, 64]})
    open_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    (y,) = sess.run(None, feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    later = times(lambda: sess.run(None, feeds), args.calls)

    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (want,) = ref.run(None, feeds)
    err = float(np.abs(y - want).max())
    ort_ms = times(lambda: ref.run(None, feeds), args.calls)

    print(f"tessera session open (compile + start ranks): {open_ms:.1f} ms")
    print(f"tessera first run:                            {first_ms:.3f} ms")
    print(row("tessera later runs", later))
    print(row("onnxruntime runs", ort_ms))
    print(f"max abs difference tessera vs onnxruntime: {err:.2e}")


if __name__ == "__main__":
    main()
