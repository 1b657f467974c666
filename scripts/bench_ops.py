#!/usr/bin/env python3
"""One-op benchmark against onnxruntime: finds kernels far slower than onnxruntime's.

Usage: python3 scripts/bench_ops.py [--filter SUBSTR,...] [--repeat 100] [--bin DIR]
                                    [--shape 8x128x256] [--markdown] [--keep DIR]

Each case is a one-node ONNX model (elementwise unary and binary ops with three broadcast
patterns, reductions and softmax over the last, a middle and the first axis, transposes,
casts, concat, slice, gather, expand, cumsum, matmuls) on an f32 tensor of --shape. It is
compiled for 1 device (`tessera compile`), run with `tessera-run --repeat R
--threads-per-device 1` (the median it prints), and run by onnxruntime with
intra_op_num_threads = 1 (median of R `session.run` calls). A case more than 1.5x slower than
onnxruntime (and above 20 µs) is flagged with `<<<`. Not a test: a map of where the kernels
stand. Tessera's time includes copying the inputs into the device and the output out
(about 0.03-0.04 ms for 1 MiB on the 2-core VM), which onnxruntime's zero-copy inputs do
not pay: the flags of the cheapest ops (Neg, Add) are that.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RNG = np.random.default_rng(0)
ROWS = []


def R(*s):
    return RNG.standard_normal(s).astype(np.float32)


def i64(*v):
    return np.array(v, np.int64)


def run(name, nodes, inputs, inits, outs, opset=18):
    if ARGS.filter and not any(f in name for f in ARGS.filter.split(",")):
        return
    d = os.path.join(ARGS.tmp, name)
    os.makedirs(d, exist_ok=True)

    def vi(k, v):
        dt = {np.float32: T.FLOAT, np.int64: T.INT64, np.bool_: T.BOOL}[v.dtype.type]
        return h.make_tensor_value_info(k, dt, v.shape)

    g = h.make_graph(nodes, name, [vi(k, v) for k, v in inputs.items()],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs],
                     [nh.from_array(v, k) for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 9
    p = os.path.join(d, "m.onnx")
    onnx.save(m, p)
    args = []
    for k, v in inputs.items():
        np.save(os.path.join(d, k + ".npy"), v)
        args += ["--input", f"{k}={os.path.join(d, k + '.npy')}"]
    spec = ",".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    plan = os.path.join(d, "plan.json")
    r = subprocess.run([os.path.join(ARGS.bin, "tessera"), "compile", p, "--devices", "1",
                        "--shape", spec, "-o", plan], capture_output=True, text=True)
    if r.returncode:
        print(f"{name:28s} compile failed: {r.stderr.strip()[:160]}", flush=True)
        ROWS.append((name, None, None))
        return
    r = subprocess.run([os.path.join(ARGS.bin, "tessera-run"), plan, *args, "--repeat",
                        str(ARGS.repeat), "--threads-per-device", "1"],
                       capture_output=True, text=True)
    m = re.search(r"median ([\d.]+) ms", r.stdout + r.stderr)
    if r.returncode or not m:
        print(f"{name:28s} run failed: {(r.stdout + r.stderr).strip()[-160:]}", flush=True)
        ROWS.append((name, None, None))
        return
    t = float(m.group(1))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    s.run(None, inputs)
    ts = []
    for _ in range(ARGS.repeat):
        t0 = time.perf_counter()
        s.run(None, inputs)
        ts.append(time.perf_counter() - t0)
    o = statistics.median(ts) * 1e3
    flag = "  <<<" if t > 1.5 * o and t > 0.02 else ""
    print(f"{name:28s} tessera {t:8.3f} ms  onnxruntime {o:8.3f} ms  ratio {t / o:5.2f}{flag}",
          flush=True)
    ROWS.append((name, t, o))


def want(family):
    """Whether a family of cases may hold a case the filter names."""
    return not ARGS.filter or any(f in family or family in f for f in ARGS.filter.split(","))


def cases(X):
    un = ["Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Erf", "Relu",
          "Softplus", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "HardSigmoid",
          "HardSwish"]
    for op in un:
        if want(op):
            x = R(*X)
            if op in ("Log", "Sqrt"):
                x = np.abs(x) + 0.1
            run(op, [h.make_node(op, ["x"], ["y"])], {"x": x}, {}, ["y"])
    if want("Gelu"):
        run("Gelu_erf", [h.make_node("Gelu", ["x"], ["y"])], {"x": R(*X)}, {}, ["y"], opset=20)
        run("Gelu_tanh", [h.make_node("Gelu", ["x"], ["y"], approximate="tanh")],
            {"x": R(*X)}, {}, ["y"], opset=20)
    col = X[:-1] + (1,)
    for op in ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]:
        if not want(op):
            continue
        a = np.abs(R(*X)) + 0.1 if op == "Pow" else R(*X)
        b_row = np.full(X[-1], 2.0, np.float32) if op == "Pow" else R(X[-1])
        b_col = np.full(col, 2.0, np.float32) if op == "Pow" else R(*col)
        run(op + "_same", [h.make_node(op, ["a", "b"], ["y"])], {"a": a, "b": R(*X)}, {}, ["y"])
        run(op + "_row", [h.make_node(op, ["a", "b"], ["y"])], {"a": a}, {"b": b_row}, ["y"])
        run(op + "_col", [h.make_node(op, ["a", "b"], ["y"])], {"a": a, "b": b_col}, {}, ["y"])
    if want("Where"):
        run("Where", [h.make_node("Where", ["c", "a", "b"], ["y"])],
            {"c": R(*X) > 0, "a": R(*X), "b": R(*X)}, {}, ["y"])
    if want("Clip"):
        run("Clip", [h.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": R(*X)},
            {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}, ["y"])
    for op in ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2",
               "ReduceSumSquare"]:
        if want(op):
            for ax in (-1, 1, 0):
                run(f"{op}_ax{ax}", [h.make_node(op, ["x", "axes"], ["y"], keepdims=1)],
                    {"x": R(*X)}, {"axes": i64(ax)}, ["y"])
    for op in ["Softmax", "LogSoftmax"]:
        if want(op):
            for ax in (-1, 1, 0):
                run(f"{op}_ax{ax}", [h.make_node(op, ["x"], ["y"], axis=ax)], {"x": R(*X)},
                    {}, ["y"])
    if want("Transpose"):
        for perm in [(0, 2, 1), (1, 0, 2), (2, 1, 0), (2, 0, 1)]:
            run("Transpose_" + "".join(map(str, perm)),
                [h.make_node("Transpose", ["x"], ["y"], perm=perm)], {"x": R(*X)}, {}, ["y"])
    if want("LayerNorm"):
        run("LayerNorm", [h.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
            {"x": R(*X)}, {"g": R(X[-1]), "b": R(X[-1])}, ["y"])
    if want("Cast"):
        run("Cast_f16_roundtrip", [h.make_node("Cast", ["x"], ["h"], to=T.FLOAT16),
                                   h.make_node("Cast", ["h"], ["y"], to=T.FLOAT)],
            {"x": R(*X)}, {}, ["y"])
    if want("Concat"):
        run("Concat_last", [h.make_node("Concat", ["a", "b"], ["y"], axis=-1)],
            {"a": R(*X), "b": R(*X)}, {}, ["y"])
        run("Concat_first", [h.make_node("Concat", ["a", "b"], ["y"], axis=0)],
            {"a": R(*X), "b": R(*X)}, {}, ["y"])
    if want("Slice"):
        run("Slice_last", [h.make_node("Slice", ["x", "s", "e", "a"], ["y"])], {"x": R(*X)},
            {"s": i64(1), "e": i64(X[-1] - 1), "a": i64(-1)}, ["y"])
        run("Slice_step2", [h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
            {"x": R(*X)}, {"s": i64(0), "e": i64(X[-1]), "a": i64(-1), "st": i64(2)}, ["y"])
    if want("Gather"):
        run("Gather_embedding", [h.make_node("Gather", ["w", "i"], ["y"])],
            {"i": RNG.integers(0, 5000, X[:-1]).astype(np.int64)}, {"w": R(5000, X[-1])}, ["y"])
        run("Gather_axis1", [h.make_node("Gather", ["x", "i"], ["y"], axis=1)], {"x": R(*X)},
            {"i": RNG.integers(0, X[1], (X[1] // 2,)).astype(np.int64)}, ["y"])
    if want("Expand"):
        run("Expand", [h.make_node("Expand", ["x", "s"], ["y"])], {"x": R(X[0], 1, X[-1])},
            {"s": i64(*X)}, ["y"])
    if want("CumSum"):
        run("CumSum_axis1", [h.make_node("CumSum", ["x", "a"], ["y"])], {"x": R(*X)},
            {"a": np.array(1, np.int64)}, ["y"])
    # Decomposed spellings exporters emit for fused ops (the fusion passes should find
    # them, or the elementwise fusion run them in one pass).
    if want("Decomposed"):
        run("Decomposed_softmax", [
            h.make_node("ReduceMax", ["x", "ax"], ["m"], keepdims=1),
            h.make_node("Sub", ["x", "m"], ["d"]), h.make_node("Exp", ["d"], ["e"]),
            h.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1),
            h.make_node("Div", ["e", "s"], ["y"])], {"x": R(*X)}, {"ax": i64(-1)}, ["y"])
        run("Decomposed_layernorm", [
            h.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=1),
            h.make_node("Sub", ["x", "m"], ["d"]), h.make_node("Pow", ["d", "two"], ["d2"]),
            h.make_node("ReduceMean", ["d2", "ax"], ["v"], keepdims=1),
            h.make_node("Add", ["v", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"]),
            h.make_node("Div", ["d", "sd"], ["n"]), h.make_node("Mul", ["n", "g"], ["ng"]),
            h.make_node("Add", ["ng", "b"], ["y"])], {"x": R(*X)},
            {"ax": i64(-1), "two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32),
             "g": R(X[-1]), "b": R(X[-1])}, ["y"])
        c = np.float32(np.sqrt(2 / np.pi))
        run("Decomposed_gelu_tanh", [
            h.make_node("Pow", ["x", "three"], ["x3"]), h.make_node("Mul", ["x3", "k"], ["kx3"]),
            h.make_node("Add", ["x", "kx3"], ["u"]), h.make_node("Mul", ["u", "c"], ["cu"]),
            h.make_node("Tanh", ["cu"], ["t"]), h.make_node("Add", ["t", "one"], ["t1"]),
            h.make_node("Mul", ["x", "t1"], ["xt"]), h.make_node("Mul", ["xt", "half"], ["y"])],
            {"x": R(*X)}, {"three": np.array(3.0, np.float32), "k": np.array(0.044715, np.float32),
                           "c": np.array(c, np.float32), "one": np.array(1.0, np.float32),
                           "half": np.array(0.5, np.float32)}, ["y"])
        run("Decomposed_swiglu", [
            h.make_node("Sigmoid", ["a"], ["s"]), h.make_node("Mul", ["a", "s"], ["sa"]),
            h.make_node("Mul", ["sa", "b"], ["y"])], {"a": R(*X), "b": R(*X)}, {}, ["y"])
        run("Decomposed_rmsnorm", [
            h.make_node("Pow", ["x", "two"], ["x2"]),
            h.make_node("ReduceMean", ["x2", "ax"], ["v"], keepdims=1),
            h.make_node("Add", ["v", "eps"], ["ve"]), h.make_node("Sqrt", ["ve"], ["sd"]),
            h.make_node("Reciprocal", ["sd"], ["r"]), h.make_node("Mul", ["x", "r"], ["n"]),
            h.make_node("Mul", ["n", "g"], ["y"])], {"x": R(*X)},
            {"ax": i64(-1), "two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32),
             "g": R(X[-1])}, ["y"])
        run("Decomposed_logsoftmax", [
            h.make_node("ReduceMax", ["x", "ax"], ["m"], keepdims=1),
            h.make_node("Sub", ["x", "m"], ["d"]), h.make_node("Exp", ["d"], ["e"]),
            h.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1),
            h.make_node("Log", ["s"], ["ls"]), h.make_node("Sub", ["d", "ls"], ["y"])],
            {"x": R(*X)}, {"ax": i64(-1)}, ["y"])
    if want("MatMul"):
        run("MatMul_weight", [h.make_node("MatMul", ["x", "w"], ["y"])], {"x": R(*X)},
            {"w": R(X[-1], 4 * X[-1])}, ["y"])
        run("MatMul_batched", [h.make_node("MatMul", ["a", "b"], ["y"])],
            {"a": R(X[0], X[1], 64), "b": R(X[0], 64, X[1])}, {}, ["y"])
        run("Gemm_transB", [h.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
            {"x": R(X[0] * X[1], X[-1])}, {"w": R(4 * X[-1], X[-1]), "b": R(4 * X[-1])}, ["y"])
        run("MatMul_vector", [h.make_node("MatMul", ["x", "w"], ["y"])], {"x": R(1, X[-1])},
            {"w": R(X[-1], 16 * X[-1])}, ["y"])


def main():
    X = tuple(int(d) for d in ARGS.shape.split("x"))
    if len(X) != 3:
        sys.exit("--shape must have three dimensions (e.g. 8x128x256)")
    if ARGS.keep:
        os.makedirs(ARGS.keep, exist_ok=True)
        ARGS.tmp = ARGS.keep
        cases(X)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ARGS.tmp = tmp
            cases(X)
    done = [r for r in ROWS if r[1] is not None]
    flagged = [r for r in done if r[1] > 1.5 * r[2] and r[1] > 0.02]
    print(f"\n{len(done)} cases ({len(ROWS) - len(done)} failed to compile or run); "
          f"{len(flagged)} over 1.5x onnxruntime; shape {ARGS.shape}, 1 thread each")
    if ARGS.markdown:
        print("\n| case | tessera ms | onnxruntime ms | ratio |\n|---|---|---|---|")
        for name, t, o in ROWS:
            if t is None:
                print(f"| {name} | failed | | |")
            else:
                print(f"| {name} | {t:.3f} | {o:.3f} | {t / o:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--filter", default="", help="comma-separated substrings of case names")
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--shape", default="8x128x256")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--keep", default="", help="write each case's model, inputs and plan "
                    "under this folder (CASE/m.onnx, CASE/plan.json) instead of a temporary one")
    ARGS = ap.parse_args()
    main()
