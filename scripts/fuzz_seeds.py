#!/usr/bin/env python3
"""Regenerates the committed fuzz seed corpora (fuzz/corpus/<target>/seed_*) and
fuzz/models/mlp_graph.onnx from the examples and the ONNX conformance cache.

ONNX seeds are the example graphs with every initializer over 256 bytes turned into
external data ("w.bin", never read by `import_bytes`), so each seed is a few KB, plus a
spread of small conformance node models (.cache/onnx-conformance/node) when present.
The plan seed is `tessera compile` of the MLP example (run `cargo build` first); the
plan_fields target embeds it.
Usage: python3 scripts/fuzz_seeds.py
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "examples", "models")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
CONFORMANCE = os.path.join(ROOT, ".cache", "onnx-conformance", "node")
# A spread of ops the importer folds, infers or rejects.
NODE_TESTS = [
    "test_add_bcast", "test_matmul_2d", "test_gemm_default_no_bias", "test_softmax_axis_1",
    "test_layer_normalization_2d_axis0", "test_reshape_negative_dim", "test_transpose_default",
    "test_slice_neg_steps", "test_gather_0", "test_concat_2d_axis_0", "test_split_equal_parts_1d_opset18",
    "test_range_float_type_positive_delta", "test_constantofshape_int_zeros", "test_expand_dim_changed",
    "test_where_example", "test_reduce_mean_default_axes_keepdims_example", "test_erf", "test_cast_FLOAT_to_FLOAT16",
    "test_unsqueeze_axis_0", "test_squeeze", "test_clip_default_min", "test_pow", "test_einsum_batch_matmul",
    "test_attention_3d", "test_rotary_embedding", "test_dequantizelinear", "test_gelu_tanh_1",
    "test_trilu_lower", "test_cumsum_1d", "test_shape_start_1",
]


def external(model):
    """Initializers over 256 bytes become external data in w.bin (offsets as if written)."""
    offset = 0
    for t in model.graph.initializer:
        if len(t.raw_data) > 256:
            n = len(t.raw_data)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", "w.bin"), ("offset", str(offset)), ("length", str(n))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += n
    return model


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def main():
    for f in sorted(os.listdir(MODELS)):
        if f.endswith(".onnx") and not f.endswith("_4l.onnx"):
            m = external(onnx.load(os.path.join(MODELS, f), load_external_data=False))
            data = m.SerializeToString()
            write("onnx_import", f, data)
            if f == "mlp.onnx":
                os.makedirs(os.path.join(ROOT, "fuzz", "models"), exist_ok=True)
                with open(os.path.join(ROOT, "fuzz", "models", "mlp_graph.onnx"), "wb") as out:
                    out.write(data)
    for t in NODE_TESTS:
        p = os.path.join(CONFORMANCE, t, "model.onnx")
        if os.path.exists(p):
            write("onnx_import", t + ".onnx", open(p, "rb").read())
        else:
            print("skipped (not in the cache):", t, file=sys.stderr)

    tessera = os.path.join(ROOT, "target", "debug", "tessera")
    with tempfile.TemporaryDirectory() as tmp:
        # Compiled beside a copy of the model, so the plan records it as "mlp.onnx" (the
        # plan_fields target writes the model under that name).
        model = os.path.join(tmp, "mlp.onnx")
        with open(model, "wb") as out:
            out.write(open(os.path.join(MODELS, "mlp.onnx"), "rb").read())
        plan = os.path.join(tmp, "plan.json")
        subprocess.run([tessera, "compile", model, "--devices", "2",
                        "--shape", "x=2x64", "-o", plan], check=True)
        write("plan_load", "mlp_tp2.json", open(plan, "rb").read())
        # Weights as a file next to the fuzz target's fixed model, so verify_files runs deep.
        text = open(plan).read().replace('"mlp.onnx"', '"w.bin"')
        write("plan_load", "mlp_tp2_wbin.json", text.encode())

    for f in ("mlp/input_x.npy", "gpt2_1l/input_input_ids.npy"):
        p = os.path.join(MODELS, f)
        if os.path.exists(p):
            write("npy_read", os.path.basename(os.path.dirname(f)) + "_" + os.path.basename(f), open(p, "rb").read())
    for dt in ("<f4", "<f2", "<f8", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1", ">f4"):
        a = np.arange(6).reshape(2, 3).astype(dt)
        with tempfile.TemporaryFile() as tf:
            np.save(tf, a)
            tf.seek(0)
            write("npy_read", dt.replace("<", "le_").replace(">", "be_").replace("|", "") + ".npy", tf.read())
    with tempfile.TemporaryFile() as tf:
        np.save(tf, np.asfortranarray(np.ones((2, 3), np.float32)))
        tf.seek(0)
        write("npy_read", "fortran.npy", tf.read())

    for i, s in enumerate(["x=2x64", "x=1x64", "x=", "x=0x64", "x=4X64, y=3", "input_ids=1x99999999999",
                           "x=18446744073709551615x64", "a=1,b=2,c=3x4x5"]):
        write("shape_spec", str(i), s.encode())


if __name__ == "__main__":
    main()
