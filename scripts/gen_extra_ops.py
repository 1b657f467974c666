#!/usr/bin/env python3
"""Small ONNX models of the activations, trigonometric ops and reductions added after the
first op set, with onnxruntime's outputs on random inputs (read by tests/extra_ops.rs).

Usage: python3 scripts/gen_extra_ops.py OUT_DIR

Writes OUT_DIR/NAME.onnx and OUT_DIR/NAME/{input_x.npy, ort_output_*.npy} for:
  activations  x[16,256] -> MatMul W1[256,512] -> h; the sum of LeakyRelu, PRelu (per-channel
               slope), Elu, Selu, Celu, ThresholdedRelu, Softsign and Mish of h -> MatMul
               W2[512,256] (an MLP whose hidden layer a 2-device plan splits by columns)
  trig         the same MLP around Tan, Asin, Acos, Atanh (of 0.9·tanh(h)), Atan, Sinh,
               Cosh, Asinh of h and Acosh of 1 + |h|
  reductions   x[8,16,64] -> MatMul W[64,128] -> h[8,16,128]; outputs ArgMax (axis 2),
               ArgMin (axis 1, keepdims, select_last_index), ArgMax (axis 0, keepdims),
               ReduceLogSumExp (axis 2), ReduceLogSum of |h| (axis 1, keepdims) and
               ReduceL1 (axes 0 and 2)
  split_reductions  x[8,16,64] -> MatMul W[64,512] -> h[8,16,512]; ArgMax, ArgMin,
               ReduceLogSumExp, ReduceL1 and ReduceLogSum of |h|, all over axis 1 (a split of
               h's columns can stay through each of them)
  decomposed_softmax  x[8,16,64] -> MatMul W[64,128] -> h[8,16,128]; Softmax over axis 2 and
               LogSoftmax over axis 1 written out as ReduceMax, Sub, Exp, ReduceSum, Div / Log, Sub
               (the canonical rules softmax and log-softmax make them one op each)
Opset 18 (axes as inputs), seed 0. Needs: onnx, numpy, onnxruntime.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def mlp(name, body, rng, n_in=256, hidden=512, rows=16):
    """x -> MatMul W1 -> h; `body(h)` gives (nodes, inits, tensors to sum); sum -> MatMul W2."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"])]
    inits = [
        const("W1", rng.standard_normal((n_in, hidden)) / np.sqrt(n_in)),
        const("W2", rng.standard_normal((hidden, n_in)) / np.sqrt(hidden)),
    ]
    more, more_inits, terms = body(rng, hidden)
    nodes += more
    inits += more_inits
    nodes.append(helper.make_node("Sum", terms, ["s"]))
    nodes.append(helper.make_node("MatMul", ["s", "W2"], ["y"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n_in])],
        inits,
    )
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    return graph, {"x": x}


def activations(rng, hidden):
    n = helper.make_node
    nodes = [
        n("LeakyRelu", ["h"], ["a0"], alpha=0.1),
        n("PRelu", ["h", "slope"], ["a1"]),
        n("Elu", ["h"], ["a2"], alpha=0.7),
        n("Selu", ["h"], ["a3"]),
        n("Celu", ["h"], ["a4"], alpha=1.5),
        n("ThresholdedRelu", ["h"], ["a5"], alpha=0.3),
        n("Softsign", ["h"], ["a6"]),
        n("Mish", ["h"], ["a7"]),
    ]
    slope = const("slope", rng.uniform(0.0, 0.5, hidden))
    return nodes, [slope], [f"a{i}" for i in range(8)]


def trig(rng, hidden):
    n = helper.make_node
    nodes = [
        n("Tanh", ["h"], ["th"]),
        n("Mul", ["th", "c09"], ["t"]),
        n("Abs", ["h"], ["ah"]),
        n("Add", ["ah", "c1"], ["h1"]),
        n("Tan", ["t"], ["b0"]),
        n("Asin", ["t"], ["b1"]),
        n("Acos", ["t"], ["b2"]),
        n("Atanh", ["t"], ["b3"]),
        n("Atan", ["h"], ["b4"]),
        n("Sinh", ["h"], ["b5"]),
        n("Cosh", ["h"], ["b6"]),
        n("Asinh", ["h"], ["b7"]),
        n("Acosh", ["h1"], ["b8"]),
    ]
    return nodes, [const("c09", 0.9), const("c1", 1.0)], [f"b{i}" for i in range(9)]


def reductions(rng):
    n = helper.make_node
    ax = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("Abs", ["h"], ["ah"]),
        n("ArgMax", ["h"], ["argmax2"], axis=2, keepdims=0),
        n("ArgMin", ["h"], ["argmin1"], axis=1, keepdims=1, select_last_index=1),
        n("ArgMax", ["h"], ["argmax0"], axis=0),
        n("ReduceLogSumExp", ["h", "ax2"], ["lse2"], keepdims=0),
        n("ReduceLogSum", ["ah", "ax1"], ["ls1"], keepdims=1),
        n("ReduceL1", ["h", "ax02"], ["l1"], keepdims=0),
    ]
    inits = [
        const("W", rng.standard_normal((64, 128)) * 2.0),
        ax("ax2", [2]),
        ax("ax1", [-2]),
        ax("ax02", [0, 2]),
    ]
    outs = [
        ("argmax2", TensorProto.INT64, [8, 16]),
        ("argmin1", TensorProto.INT64, [8, 1, 128]),
        ("argmax0", TensorProto.INT64, [1, 16, 128]),
        ("lse2", TensorProto.FLOAT, [8, 16]),
        ("ls1", TensorProto.FLOAT, [8, 1, 128]),
        ("l1", TensorProto.FLOAT, [16]),
    ]
    graph = helper.make_graph(
        nodes,
        "reductions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64])],
        [helper.make_tensor_value_info(o, t, s) for o, t, s in outs],
        inits,
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    return graph, {"x": x}


def split_reductions(rng):
    n = helper.make_node
    ax1 = numpy_helper.from_array(np.asarray([1], dtype=np.int64), "ax1")
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("Abs", ["h"], ["ah"]),
        n("ArgMax", ["h"], ["argmax"], axis=1, keepdims=0),
        n("ArgMin", ["h"], ["argmin"], axis=1, keepdims=0),
        n("ReduceLogSumExp", ["h", "ax1"], ["lse"], keepdims=0),
        n("ReduceL1", ["h", "ax1"], ["l1"], keepdims=0),
        n("ReduceLogSum", ["ah", "ax1"], ["ls"], keepdims=0),
    ]
    outs = [("argmax", TensorProto.INT64), ("argmin", TensorProto.INT64)]
    outs += [(o, TensorProto.FLOAT) for o in ("lse", "l1", "ls")]
    graph = helper.make_graph(
        nodes,
        "split_reductions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64])],
        [helper.make_tensor_value_info(o, t, [8, 512]) for o, t in outs],
        [const("W", rng.standard_normal((64, 512)) / 8.0), ax1],
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    return graph, {"x": x}


def decomposed_softmax(rng):
    n = helper.make_node
    ax = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        # Softmax over the last axis.
        n("ReduceMax", ["h", "ax2"], ["m2"], keepdims=1),
        n("Sub", ["h", "m2"], ["d2"]),
        n("Exp", ["d2"], ["e2"]),
        n("ReduceSum", ["e2", "ax2"], ["s2"], keepdims=1),
        n("Div", ["e2", "s2"], ["softmax"]),
        # LogSoftmax over the middle axis.
        n("ReduceMax", ["h", "ax1"], ["m1"], keepdims=1),
        n("Sub", ["h", "m1"], ["d1"]),
        n("Exp", ["d1"], ["e1"]),
        n("ReduceSum", ["e1", "ax1"], ["s1"], keepdims=1),
        n("Log", ["s1"], ["l1"]),
        n("Sub", ["d1", "l1"], ["log_softmax"]),
    ]
    graph = helper.make_graph(
        nodes,
        "decomposed_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [8, 16, 128])
         for o in ("softmax", "log_softmax")],
        [const("W", rng.standard_normal((64, 128)) / 4.0), ax("ax2", [2]), ax("ax1", [1])],
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    return graph, {"x": x}


def save(out, name, graph, inputs):
    import onnxruntime as ort

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(out, f"{name}.onnx")
    onnx.save(model, path)
    ref = os.path.join(out, name)
    os.makedirs(ref, exist_ok=True)
    for k, v in inputs.items():
        np.save(os.path.join(ref, f"input_{k}.npy"), v)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for o, val in zip(sess.get_outputs(), sess.run(None, inputs)):
        np.save(os.path.join(ref, f"ort_output_{o.name}.npy"), val)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    save(out, "activations", *mlp("activations", activations, rng))
    save(out, "trig", *mlp("trig", trig, rng))
    save(out, "reductions", *reductions(rng))
    save(out, "split_reductions", *split_reductions(rng))
    save(out, "decomposed_softmax", *decomposed_softmax(rng))


if __name__ == "__main__":
    main()
