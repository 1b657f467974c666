#!/usr/bin/env python3
"""Small ONNX models of the selection, scatter, one-hot, normalisation and bitwise ops added
after the extra op set, with onnxruntime's outputs on random inputs (read by
tests/more_ops.rs).

Usage: python3 scripts/gen_more_ops.py OUT_DIR

Writes OUT_DIR/NAME.onnx and OUT_DIR/NAME/{input_*.npy, ort_output_*.npy} for:
  topk         x[8,16,64] -> MatMul W[64,512] -> h[8,16,512]; TopK k=5 over axis 1 of h
               (largest; a 2-device plan can keep h's column split through it) and TopK k=3
               over the last axis of x (smallest), each with its Values and Indices (sorted:
               with sorted=0 onnxruntime returns its own order, which ONNX leaves open)
  scatter      x[16,64] -> MatMul W[64,128] -> h[16,128]; ScatterElements of u = h[0:4]·2
               into h at constant row indices (axis 0, reduction add; duplicates), of
               the same into the columns of h (axis 1, reduction max), and ScatterND of 3
               rows of h+1 into h at constant (unique) row tuples
  one_hot      x[16,64] -> MatMul W[64,128] -> h[16,128]; ReduceSum over axis 0 of
               Hardmax(h, axis 0)·h (the column maxima; a 2-device plan can keep h's column
               split through Hardmax), OneHot of ArgMax(x, axis 1) (depth
               64 as a float, values [0, 1]), OneHot of an int64 input ids[4,5] in -9..9
               (negative and out-of-range indices; depth 7, axis 1, values [-1, 2]) and
               EyeLike(x, k=3)·x
  norms        x[8,16,64] -> MatMul W[64,128] -> h[8,16,128]; LpNormalization p=2 over axis 1
               and p=1 over the last axis, MeanVarianceNormalization over axes [0, 1], Shrink (bias 0.1, lambd 0.3), LRN (size 5 on h
               as [8,16,8,16]) and Shrink of an int64 input xi[4,6]
  split_norms  x[8,16,64] -> MatMul W[64,512] -> h[8,16,512]; LpNormalization p=2 over axis 1
               and MeanVarianceNormalization over axes [0, 1], each summed over axis 1 (a
               2-device plan can keep h's column split through both)
  bitwise      BitwiseAnd / Or / Xor (int32 a[8,64] with b[64] broadcast, int8 c[8,64] with
               d[8,1]), BitwiseNot (int32, uint8) and BitShift LEFT / RIGHT of uint8 u[8,64]
               by sh[8,64] in 0..8 (onnxruntime shifts unsigned types only)
Opset 18, seed 0. Needs: onnx, numpy, onnxruntime.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The same writer (model at OPSET 18, inputs, onnxruntime's outputs) as the first extra ops.
from gen_extra_ops import save  # noqa: E402  (scripts/ is on sys.path when run)

OPSET = 18


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def topk(rng):
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("TopK", ["h", "k5"], ["values1", "indices1"], axis=1),
        n("TopK", ["x", "k3"], ["values2", "indices2"], axis=-1, largest=0),
    ]
    outs = [
        ("values1", TensorProto.FLOAT, [8, 5, 512]),
        ("indices1", TensorProto.INT64, [8, 5, 512]),
        ("values2", TensorProto.FLOAT, [8, 16, 3]),
        ("indices2", TensorProto.INT64, [8, 16, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "topk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64])],
        [helper.make_tensor_value_info(o, t, s) for o, t, s in outs],
        [
            const("W", rng.standard_normal((64, 512)) / 8.0),
            const("k5", [5], np.int64),
            const("k3", [3], np.int64),
        ],
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    return graph, {"x": x}


def scatter(rng):
    n = helper.make_node
    rows = rng.integers(0, 16, size=(4, 128))
    rows[1] = rows[0]  # duplicate targets: the reduction combines them
    cols = np.stack([rng.permutation(128)[:4] for _ in range(16)])[:, :4]
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("Slice", ["h", "s0", "s4"], ["h4"]),
        n("Mul", ["h4", "two"], ["u"]),
        n("ScatterElements", ["h", "rows", "u"], ["add_rows"], axis=0, reduction="add"),
        n("Slice", ["h", "s0", "s4", "one"], ["hc"]),
        n("ScatterElements", ["h", "cols", "hc"], ["max_cols"], axis=1, reduction="max"),
        n("Add", ["h4", "onef"], ["h4p"]),
        n("Slice", ["h4p", "s0", "s3"], ["u3"]),
        n("ScatterND", ["h", "tuples", "u3"], ["nd_rows"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scatter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [16, 128])
         for o in ("add_rows", "max_cols", "nd_rows")],
        [
            const("W", rng.standard_normal((64, 128)) / 8.0),
            const("s0", [0], np.int64),
            const("s3", [3], np.int64),
            const("s4", [4], np.int64),
            const("one", [1], np.int64),
            const("two", 2.0),
            const("onef", 1.0),
            const("rows", rows, np.int64),
            const("cols", cols, np.int64),
            const("tuples", [[5], [-1], [0]], np.int64),
        ],
    )
    x = rng.standard_normal((16, 64)).astype(np.float32)
    return graph, {"x": x}


def one_hot(rng):
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("Hardmax", ["h"], ["hardmax"], axis=0),
        n("Mul", ["hardmax", "h"], ["picked"]),
        n("ReduceSum", ["picked", "axis0"], ["column_max"], keepdims=0),
        n("ArgMax", ["x"], ["am"], axis=1, keepdims=0),
        n("OneHot", ["am", "depth64", "onoff"], ["one_hot_rows"]),
        n("OneHot", ["ids", "depth7", "signs"], ["one_hot_ids"], axis=1),
        n("EyeLike", ["x"], ["eye"], k=3),
        n("Mul", ["eye", "x"], ["diag"]),
    ]
    outs = [
        ("column_max", [128]),
        ("one_hot_rows", [16, 64]),
        ("one_hot_ids", [4, 7, 5]),
        ("diag", [16, 64]),
    ]
    graph = helper.make_graph(
        nodes,
        "one_hot",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 5]),
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outs],
        [
            const("W", rng.standard_normal((64, 128)) / 8.0),
            const("depth64", 64.0),
            const("axis0", [0], np.int64),
            const("depth7", [7], np.int64),
            const("onoff", [0.0, 1.0]),
            const("signs", [-1.0, 2.0]),
        ],
    )
    x = rng.standard_normal((16, 64)).astype(np.float32)
    ids = rng.integers(-9, 9, size=(4, 5)).astype(np.int64)
    return graph, {"x": x, "ids": ids}


def norms(rng):
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("LpNormalization", ["h"], ["lp2"], axis=1, p=2),
        n("LpNormalization", ["h"], ["lp1"], axis=-1, p=1),
        n("MeanVarianceNormalization", ["h"], ["mvn"], axes=[0, 1]),
        n("Shrink", ["h"], ["shrink"], bias=0.1, lambd=0.3),
        n("Reshape", ["h", "nchw"], ["h4"]),
        n("LRN", ["h4"], ["lrn"], size=5, alpha=0.01, beta=0.6, bias=2.0),
        n("Shrink", ["xi"], ["shrink_int"], bias=2.0, lambd=1.5),
    ]
    outs = [(o, TensorProto.FLOAT, [8, 16, 128]) for o in ("lp2", "lp1", "mvn", "shrink")]
    outs.append(("lrn", TensorProto.FLOAT, [8, 16, 8, 16]))
    outs.append(("shrink_int", TensorProto.INT64, [4, 6]))
    graph = helper.make_graph(
        nodes,
        "norms",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64]),
            helper.make_tensor_value_info("xi", TensorProto.INT64, [4, 6]),
        ],
        [helper.make_tensor_value_info(o, t, s) for o, t, s in outs],
        [const("W", rng.standard_normal((64, 128)) / 8.0), const("nchw", [8, 16, 8, 16], np.int64)],
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    xi = rng.integers(-5, 6, size=(4, 6)).astype(np.int64)
    return graph, {"x": x, "xi": xi}


def split_norms(rng):
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "W"], ["h"]),
        n("LpNormalization", ["h"], ["lp2"], axis=1, p=2),
        n("MeanVarianceNormalization", ["h"], ["mvn"], axes=[0, 1]),
        n("ReduceSum", ["lp2", "axis1"], ["lp2_sum"], keepdims=0),
        n("ReduceSum", ["mvn", "axis1"], ["mvn_sum"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "split_norms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 64])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [8, 512])
         for o in ("lp2_sum", "mvn_sum")],
        [const("W", rng.standard_normal((64, 512)) / 8.0), const("axis1", [1], np.int64)],
    )
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    return graph, {"x": x}


def bitwise(rng):
    n = helper.make_node
    nodes = [
        n("BitwiseAnd", ["a", "b"], ["and"]),
        n("BitwiseOr", ["a", "b"], ["or"]),
        n("BitwiseXor", ["a", "b"], ["xor"]),
        n("BitwiseNot", ["a"], ["not"]),
        n("BitwiseAnd", ["c", "d"], ["and8"]),
        n("BitwiseNot", ["u"], ["not_u8"]),
        n("BitShift", ["u", "sh"], ["left"], direction="LEFT"),
        n("BitShift", ["u", "sh"], ["right"], direction="RIGHT"),
    ]
    i32, i8, u8 = TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8
    ins = [("a", i32, [8, 64]), ("b", i32, [64]), ("c", i8, [8, 64]), ("d", i8, [8, 1]),
           ("u", u8, [8, 64]), ("sh", u8, [8, 64])]
    outs = [("and", i32), ("or", i32), ("xor", i32), ("not", i32), ("and8", i8),
            ("not_u8", u8), ("left", u8), ("right", u8)]
    graph = helper.make_graph(
        nodes,
        "bitwise",
        [helper.make_tensor_value_info(o, t, s) for o, t, s in ins],
        [helper.make_tensor_value_info(o, t, [8, 64]) for o, t in outs],
    )
    big = np.iinfo(np.int32)
    feeds = {
        "a": rng.integers(big.min, big.max, size=(8, 64), dtype=np.int32),
        "b": rng.integers(big.min, big.max, size=(64,), dtype=np.int32),
        "c": rng.integers(-128, 128, size=(8, 64)).astype(np.int8),
        "d": rng.integers(-128, 128, size=(8, 1)).astype(np.int8),
        "u": rng.integers(0, 256, size=(8, 64)).astype(np.uint8),
        "sh": rng.integers(0, 8, size=(8, 64)).astype(np.uint8),
    }
    return graph, feeds


MODELS = {
    "topk": topk,
    "scatter": scatter,
    "one_hot": one_hot,
    "norms": norms,
    "split_norms": split_norms,
    "bitwise": bitwise,
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, build in MODELS.items():
        save(out, name, *build(rng))


if __name__ == "__main__":
    main()
