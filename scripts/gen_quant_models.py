#!/usr/bin/env python3
"""Generate small weight-only quantised models (DequantizeLinear of int8/uint8 initializers)
with onnxruntime reference outputs, for tests/quantised_weights.rs.

Usage: python3 scripts/gen_quant_models.py OUT_DIR

Writes into OUT_DIR (random data, fixed seed; idempotent: same bytes every run):
  quant_per_axis.onnx  (opset 13) x[2, 8, 64] -> MatMul(x, DequantizeLinear(w1_q int8 [64, 128],
                       per-axis scale [128] on axis 1, int8 zero point [128])) -> Relu
                       -> MatMul(., DequantizeLinear(w2_q uint8 [128, 64], per-tensor scale and
                       uint8 zero point)) -> y[2, 8, 64]
  quant_blocked.onnx   (opset 21) the same, the first weight blocked: block_size 16 along axis 0
                       (scale and int8 zero point [4, 128]); the second weight's per-tensor scale
                       and zero point come from Constant nodes instead of initializers
  quant_activation.onnx (opset 13) DequantizeLinear of a graph input xq int8 [4, 8] (scale
                       0.5, zero point 1): an activation, lowered to elementwise ops
and for each model NAME a folder NAME/ with its input (input_x.npy, or input_xq.npy: every
8th int8 value from -128) and onnxruntime's ort_output_y.npy (the file conventions of
examples/models/generate.py).
Needs: onnx, numpy, onnxruntime.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

D_IN, D_HID = 64, 128
BLOCK = 16


def quantised(rng, shape, dtype, scale_shape, zp_range):
    """Random stored values, a positive float scale and a zero point of `scale_shape`."""
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    # Scales so that the dequantised weight is about N(0, 1/fan_in).
    scale = (rng.uniform(0.5, 1.5, size=scale_shape) / (128 * np.sqrt(shape[0]))).astype(np.float32)
    zp = rng.integers(zp_range[0], zp_range[1] + 1, size=scale_shape).astype(dtype)
    return q, scale, zp


def build(name, opset, blocked, rng):
    inits, nodes = [], []

    def init(n, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    # First weight: int8, per-axis on the output columns, or blocked along the rows.
    if blocked:
        s_shape = (D_IN // BLOCK, D_HID)
        attrs = {"axis": 0, "block_size": BLOCK}
    else:
        s_shape = (D_HID,)
        attrs = {"axis": 1}
    q1, s1, z1 = quantised(rng, (D_IN, D_HID), np.int8, s_shape, (-4, 4))
    nodes.append(helper.make_node(
        "DequantizeLinear",
        [init("w1_q", q1), init("w1_scale", s1), init("w1_zp", z1)],
        ["w1"], name="dq_w1", **attrs))
    # Second weight: uint8, per-tensor with a zero point.
    q2, s2, z2 = quantised(rng, (D_HID, D_IN), np.uint8, (), (120, 136))
    if blocked:
        for n, arr in (("w2_scale", s2), ("w2_zp", z2)):
            nodes.append(helper.make_node(
                "Constant", [], [n], name=f"const_{n}", value=numpy_helper.from_array(np.asarray(arr), n)))
        w2_inputs = [init("w2_q", q2), "w2_scale", "w2_zp"]
    else:
        w2_inputs = [init("w2_q", q2), init("w2_scale", s2), init("w2_zp", z2)]
    nodes.append(helper.make_node("DequantizeLinear", w2_inputs, ["w2"], name="dq_w2"))
    nodes.append(helper.make_node("MatMul", ["x", "w1"], ["h"], name="matmul_1"))
    nodes.append(helper.make_node("Relu", ["h"], ["a"], name="relu"))
    nodes.append(helper.make_node("MatMul", ["a", "w2"], ["y"], name="matmul_2"))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, D_IN])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tessera-gen-quant")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    feeds = {"x": rng.standard_normal((2, 8, D_IN)).astype(np.float32)}
    return model, feeds


def activation_model():
    """DequantizeLinear whose x is a graph input (valid ONNX; not a weight)."""
    node = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq_activation")
    graph = helper.make_graph(
        [node], "quant_activation",
        [helper.make_tensor_value_info("xq", TensorProto.INT8, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        initializer=[numpy_helper.from_array(np.float32(0.5), "s"),
                     numpy_helper.from_array(np.int8(1), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="tessera-gen-quant")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261202)
    for name, opset, blocked in (("quant_per_axis", 13, False), ("quant_blocked", 21, True)):
        model, feeds = build(name, opset, blocked, rng)
        path = os.path.join(out_dir, f"{name}.onnx")
        onnx.save(model, path)
        ref_dir = os.path.join(out_dir, name)
        os.makedirs(ref_dir, exist_ok=True)
        for k, v in feeds.items():
            np.save(os.path.join(ref_dir, f"input_{k}.npy"), v)
        # Basic optimisations only: the extended level fuses DequantizeLinear + MatMul into a
        # kernel that quantises the activations too (6e-3 off the DequantizeLinear spec on
        # these models); basic (constant folding) computes (q - zero_point) * scale exactly.
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for o, val in zip(sess.get_outputs(), sess.run(None, feeds)):
            np.save(os.path.join(ref_dir, f"ort_output_{o.name}.npy"), val)
        print(f"{path}: {len(model.graph.node)} nodes, {os.path.getsize(path)} bytes + onnxruntime reference")
    path = os.path.join(out_dir, "quant_activation.onnx")
    onnx.save(activation_model(), path)
    ref_dir = os.path.join(out_dir, "quant_activation")
    os.makedirs(ref_dir, exist_ok=True)
    xq = np.arange(-128, 128, 8, dtype=np.int8).reshape(4, 8)
    np.save(os.path.join(ref_dir, "input_xq.npy"), xq)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.save(os.path.join(ref_dir, "ort_output_y.npy"), sess.run(None, {"xq": xq})[0])
    print(f"{path}: DequantizeLinear of an activation + onnxruntime reference")


if __name__ == "__main__":
    main()
