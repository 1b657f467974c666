#!/usr/bin/env python3
"""Every Conv of a vision model, in the model, beside onnxruntime's: time per Conv and per
kind of Conv (depthwise, 1×1, other; by stride), one thread each.

Usage: python3 scripts/conv_steps.py DIR NAME [--repeat 30] [--all]

DIR holds scripts/export_vision.py exports (NAME.onnx and NAME/input_*.npy). Tessera's
side is `TESSERA_PROFILE=steps tessera-run PLAN --repeat R --threads-per-device 1` (one
line per scheduled step, in run order); onnxruntime's is its own profiler
(`enable_profiling`, the `_kernel_time` events). Both sides run the Conv nodes in graph
order, so the i-th Conv step is the i-th Conv node. A fused Conv step includes its
epilogue (a residual Add, an activation) where onnxruntime may have fused the same ops
(ReLU, Clip) or not (SiLU as Sigmoid and Mul): compare like with like. Prints the median
µs of each Conv (with --all) and the totals per kind.
"""
import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def ort_conv_times(model, feeds, repeat, tmp):
    """Median µs of every Conv node in onnxruntime, in graph (first-run) order."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "ort")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(3 + repeat):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    per, order = collections.defaultdict(list), []
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if e["args"].get("op_name") != "Conv":
            continue
        name = e["name"][: -len("_kernel_time")]
        if name not in per:
            order.append(name)
        per[name].append(e["dur"])
    return [statistics.median(per[n]) for n in order]


def tessera_conv_times(model, name, value, path, repeat, tmp):
    """Median µs of every Conv step of Tessera's plan, in run order."""
    plan = os.path.join(tmp, "plan.json")
    shape = "x".join(map(str, value.shape))
    subprocess.run([os.path.join(BIN, "tessera"), "compile", model, "--devices", "1",
                    "--shape", f"{name}={shape}", "-o", plan], check=True, capture_output=True)
    env = dict(os.environ, TESSERA_PROFILE="steps")
    r = subprocess.run([os.path.join(BIN, "tessera-run"), plan, "--input", f"{name}={path}",
                        "--repeat", str(repeat), "--threads-per-device", "1"],
                       env=env, capture_output=True, text=True, check=True)
    per, order = collections.defaultdict(list), []
    for line in r.stderr.splitlines():
        parts = line.split()
        # "NNNNN <op> [shape] <count> <ms> ms", one block per run of the rank's profile.
        if len(parts) < 4 or not parts[0].isdigit() or "Conv" not in line:
            continue
        count, ms = int(parts[-3]), float(parts[-2])
        if parts[0] not in per:
            order.append(parts[0])
        per[parts[0]].append(ms / count * 1e3)
    return [statistics.median(per[k]) for k in order]


def kind(node, weights):
    """depthwise / 1x1 / other, with the stride."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    stride = (attrs.get("strides") or [1])[0]
    w = weights.get(node.input[1])
    if attrs.get("group", 1) > 1 and w is not None and w[1] == 1:
        k = "depthwise"
    elif w is not None and all(d == 1 for d in w[2:]):
        k = "1x1"
    else:
        k = "other"
    return f"{k} /{stride}", w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("name")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--all", action="store_true", help="print every Conv")
    args = ap.parse_args()
    model = os.path.join(args.dir, f"{args.name}.onnx")
    inputs = sorted(glob.glob(os.path.join(args.dir, args.name, "input_*.npy")))
    if not os.path.exists(model) or len(inputs) != 1:
        sys.exit(f"conv_steps: {model} with one input_*.npy beside it is needed")
    path = inputs[0]
    name = os.path.basename(path)[len("input_"):-len(".npy")]
    value = np.load(path)
    g = onnx.load(model, load_external_data=False).graph
    weights = {t.name: list(t.dims) for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    with tempfile.TemporaryDirectory() as tmp:
        theirs = ort_conv_times(model, {name: value}, args.repeat, tmp)
        ours = tessera_conv_times(model, name, value, path, args.repeat, tmp)
    if not (len(theirs) == len(ours) == len(convs)):
        sys.exit(f"conv_steps: {len(convs)} Conv nodes, {len(ours)} Conv steps, "
                 f"{len(theirs)} onnxruntime Conv events: cannot pair them")
    totals = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for node, u, t in zip(convs, ours, theirs):
        k, w = kind(node, weights)
        tot = totals[k]
        tot[0] += u
        tot[1] += t
        tot[2] += 1
        if args.all:
            print(f"{str(w):22s} {k:14s} tessera {u:8.1f} µs  onnxruntime {t:8.1f} µs  {u / t:5.2f}")
    print(f"{'kind':14s} {'n':>3s} {'tessera µs':>11s} {'onnxruntime µs':>15s} {'ratio':>6s}")
    for k, (u, t, n) in sorted(totals.items()):
        print(f"{k:14s} {n:3d} {u:11.0f} {t:15.0f} {u / t:6.2f}")
    u, t = sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())
    print(f"{'all Convs':14s} {len(convs):3d} {u:11.0f} {t:15.0f} {u / t:6.2f}")


if __name__ == "__main__":
    main()
