#!/usr/bin/env python3
"""Record onnxruntime's outputs for the data x tensor mesh tests (tests/mesh.rs).

Usage: python3 scripts/gen_mesh_refs.py [OUT_DIR]   (default: tests/data/mesh)

For each model below, writes OUT_DIR/NAME/input_<input>.npy (a batch of 8, so that it splits
over 2 and 4 data groups; a fixed seed, every row different) and ort_output_<output>.npy,
onnxruntime's outputs on them (CPU execution provider, no graph optimisation), the
independent reference tests/mesh.rs compares the partitioned runs with. Zoo models
(.cache/zoo, scripts/gen_zoo.py) are skipped when absent.
Needs: onnx, numpy, onnxruntime.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

BATCH = 8
# (name, model path relative to the repository root, sequence length)
MODELS = [
    ("mlp", "examples/models/mlp.onnx", None),
    ("mlp_gemm", "examples/models/mlp_gemm.onnx", None),
    ("sdpa_2l", "examples/models/sdpa_2l.onnx", 8),
    ("gpt2_4l", "examples/models/gpt2_4l.onnx", 8),
    ("llama_4l", "examples/models/llama_4l.onnx", 8),
    ("bert__base", ".cache/zoo/bert__base.onnx", 8),
]


def sanitize(name):
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def vocab(model):
    """Rows of the largest 2-D initializer a Gather reads (the embedding table)."""
    inits = {i.name: i for i in model.graph.initializer}
    rows = [
        inits[n.input[0]].dims[0]
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
    ]
    return max(rows)


def inputs_for(model, seq, rng):
    out = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.dim_value else None for d in vi.type.tensor_type.shape.dim]
        shape = [BATCH] + [d if d is not None else seq for d in dims[1:]]
        elem = vi.type.tensor_type.elem_type
        if elem == onnx.TensorProto.INT64 and "mask" in vi.name:
            lengths = rng.integers(shape[1] // 2, shape[1] + 1, size=BATCH)
            out[vi.name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        elif elem == onnx.TensorProto.INT64:
            out[vi.name] = rng.integers(0, vocab(model), size=shape).astype(np.int64)
        else:
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/data/mesh")
    rng = np.random.default_rng(20261202)
    for name, rel, seq in MODELS:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            print(f"skip {name}: {rel} not found")
            continue
        model = onnx.load(path)
        feeds = inputs_for(model, seq, rng)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        for k, v in feeds.items():
            np.save(os.path.join(d, f"input_{sanitize(k)}.npy"), v)
        for o, v in zip(sess.get_outputs(), outs):
            np.save(os.path.join(d, f"ort_output_{sanitize(o.name)}.npy"), v)
        print(f"{name}: inputs {[(k, v.shape) for k, v in feeds.items()]}, outputs {[v.shape for v in outs]}")


if __name__ == "__main__":
    main()
