#!/usr/bin/env python3
"""Every Conv of a vision model, in the model, beside onnxruntime's: time per Conv and per
kind of Conv (depthwise, 1×1, other; by stride), one thread each.

Usage: python3 scripts/conv_steps.py DIR NAME [--repeat 30] [--all]

DIR holds scripts/export_vision.py exports (NAME.onnx and NAME/input_*.npy). Tessera's
side is `TESSERA_PROFILE=steps tessera-run PLAN --repeat R --threads-per-device 1` (one
line per scheduled step, in run order); onnxruntime's is its own profiler
(`enable_profiling`, the `_kernel_time` events). Steps are paired with Conv nodes by
name: Tessera's steps name their graph node; onnxruntime names a fused node after its own
name or its output (with `_nchwc` for its blocked-layout kernels), traced back through the
ops fused into it to the Conv. A fused Conv step includes its
epilogue (a residual Add, an activation) where onnxruntime may have fused the same ops
(ReLU, Clip) or not (SiLU as Sigmoid and Mul): compare like with like. Prints the median
µs of each Conv (with --all) and the totals per kind.
"""
import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def conv_of(name, graph, own=frozenset()):
    """The Conv node an onnxruntime node name stands for: a node's own name, or the value a
    fused node outputs (its last fused op's), traced back through that op's inputs. Where
    two Convs meet (a residual Add fused into a Conv), the one without an event of its own
    (`own`: every event's name) is the fused one."""
    by_name = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    node = by_name.get(name) or producer.get(name)
    for _ in range(8):
        if node is None or node.op_type == "Conv":
            return node
        ins = [producer.get(i) for i in node.input]
        convs = [n for n in ins if n is not None and n.op_type == "Conv"]
        convs.sort(key=lambda n: n.name in own or any(o in own for o in n.output))
        node = convs[0] if convs else next((n for n in ins if n is not None), None)
    return None


def ort_conv_times(model, feeds, repeat, tmp, graph):
    """Median µs of every Conv node in onnxruntime, by Conv node name."""
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
    convs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and e["args"].get("op_name") == "Conv"]
    names = [e["name"][: -len("_kernel_time")] for e in convs]
    own = frozenset(names) | frozenset(n.removesuffix("_nchwc") for n in names)
    per = collections.defaultdict(list)
    for e, name in zip(convs, names):
        conv = conv_of(name, graph, own) or conv_of(name.removesuffix("_nchwc"), graph, own)
        if conv is None:
            # onnxruntime runs a BatchNormalization that follows no Conv (DenseNet's
            # pre-activations) as a depthwise NCHWc Conv: not one of the model's Convs.
            continue
        per[conv.name].append(e["dur"])
    return {n: statistics.median(v) for n, v in per.items()}


def tessera_conv_times(model, name, value, path, repeat, tmp):
    """Median µs of every Conv step of Tessera's plan, by the graph node it runs."""
    plan = os.path.join(tmp, "plan.json")
    shape = "x".join(map(str, value.shape))
    subprocess.run([os.path.join(BIN, "tessera"), "compile", model, "--devices", "1",
                    "--shape", f"{name}={shape}", "-o", plan], check=True, capture_output=True)
    env = dict(os.environ, TESSERA_PROFILE="steps")
    r = subprocess.run([os.path.join(BIN, "tessera-run"), plan, "--input", f"{name}={path}",
                        "--repeat", str(repeat), "--threads-per-device", "1"],
                       env=env, capture_output=True, text=True, check=True)
    per = collections.defaultdict(list)
    for line in r.stderr.splitlines():
        # "NNNNN <op> '<node>' [shape] <count> <ms> ms", one block per run.
        m = re.match(r"\s*(\d+) (.*Conv.*) '(.+)' \[.*\]\s+(\d+)\s+([0-9.]+) ms", line)
        if m:
            per[m.group(3)].append(float(m.group(5)) / int(m.group(4)) * 1e3)
    return {n: statistics.median(v) for n, v in per.items()}


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
        theirs = ort_conv_times(model, {name: value}, args.repeat, tmp, g)
        ours = tessera_conv_times(model, name, value, path, args.repeat, tmp)
    missing = [n.name for n in convs if n.name not in ours or n.name not in theirs]
    if len(missing) == len(convs):
        sys.exit("conv_steps: no Conv could be paired between the two profiles")
    for n in missing:
        side = "Tessera" if n not in ours else "onnxruntime"
        print(f"conv_steps: {n} left out: no time on {side}'s side", file=sys.stderr)
    convs = [n for n in convs if n.name not in missing]
    totals = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for node in convs:
        u, t = ours[node.name], theirs[node.name]
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
