#!/usr/bin/env python3
"""Quantise the export zoo's base models with onnxruntime's own quantisation tools and write
onnxruntime's outputs beside them (read by tests/ort_quantised.rs).

Usage: python3 scripts/gen_ort_quant.py ZOO_DIR OUT_DIR

ZOO_DIR is scripts/gen_zoo.py's output (FAMILY__base.onnx and FAMILY__base/input_*.npy for
the families gpt2, bert and llama). For each family, OUT_DIR gets FAMILY__VARIANT.onnx and
FAMILY__VARIANT/{input_*.npy, ort_output_*.npy, float_output_*.npy} for the variants:

  dynamic      quantize_dynamic, int8 weights per tensor (7-bit range: see VARIANTS):
               DynamicQuantizeLinear + MatMulInteger (+ DequantizeLinear of the quantised
               embedding tables)
  dynamic_pc   quantize_dynamic, uint8 weights per channel (per-column zero points)
  qdq          quantize_static in QDQ format (uint8 activations, int8 weights per channel,
               int32 biases), calibrated on the model's own input: QuantizeLinear /
               DequantizeLinear pairs around every quantised op
  nbits4       MatMulNBitsQuantizer, 4 bits, asymmetric, block 32: com.microsoft MatMulNBits
               with packed zero points
  nbits4_sym   the same, symmetric (no zero points, the default of 8), block 16
  nbits8       MatMulNBits with 8 bits, block 32
  int4_qdq     MatMulNBitsQuantizer in QDQ format: DequantizeLinear of INT4 initializers
               (packed two per byte), blocked along K, opset 21

`ort_output_*` is onnxruntime with ORT_ENABLE_BASIC: the ops as the model writes them.
The extended level fuses DequantizeLinear + MatMul into MatMulNBits, which then quantises
the activations to int8 as well (2 % off the model on int4_qdq); a user comparing against
that is comparing against a different computation. `float_output_*` is the float base
model's output on the same input: a test measures how far quantisation moved the output
and how far Tessera is from onnxruntime relative to that.
Idempotent (skips a variant whose folder exists). Needs: onnx, numpy, onnxruntime.
"""
import logging
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization import matmul_nbits_quantizer as mnq

FAMILIES = ["gpt2", "bert", "llama"]


def inputs_of(folder):
    return {f[len("input_"):-len(".npy")]: np.load(os.path.join(folder, f))
            for f in sorted(os.listdir(folder)) if f.startswith("input_")}


def run(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


class Reader(CalibrationDataReader):
    """The model's own input, once."""

    def __init__(self, feeds):
        self.it = iter([feeds])

    def get_next(self):
        return next(self.it, None)


def nbits(src, dst, **cfg):
    fmt = cfg.pop("quant_format", QuantFormat.QOperator)
    bits = cfg.pop("bits", 4)
    algo = mnq.DefaultWeightOnlyQuantConfig(quant_format=fmt, bits=bits, **cfg)
    q = mnq.MatMulNBitsQuantizer(onnx.load(src), algo_config=algo)
    q.process()
    q.model.save_model_to_file(dst, False)


VARIANTS = {
    # reduce_range (7-bit weights): onnxruntime's uint8 x int8 kernel on CPUs without VNNI
    # (AVX2, AVX-512 without VNNI) sums pairs of products in 16 bits, which saturate with
    # full-range weights, so its reference would be off by thousands in some sums there.
    "dynamic": lambda s, d, f: quantize_dynamic(s, d, weight_type=QuantType.QInt8,
                                                reduce_range=True),
    "dynamic_pc": lambda s, d, f: quantize_dynamic(s, d, weight_type=QuantType.QUInt8,
                                                   per_channel=True),
    "qdq": lambda s, d, f: quantize_static(s, d, Reader(f), quant_format=QuantFormat.QDQ,
                                           per_channel=True,
                                           activation_type=QuantType.QUInt8,
                                           weight_type=QuantType.QInt8),
    "nbits4": lambda s, d, f: nbits(s, d, block_size=32, is_symmetric=False),
    "nbits4_sym": lambda s, d, f: nbits(s, d, block_size=16, is_symmetric=True),
    "nbits8": lambda s, d, f: nbits(s, d, block_size=32, is_symmetric=False, bits=8),
    "int4_qdq": lambda s, d, f: nbits(s, d, block_size=32, is_symmetric=True,
                                      quant_format=QuantFormat.QDQ),
}


def main():
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    zoo, out = sys.argv[1], sys.argv[2]
    logging.disable(logging.WARNING)
    os.makedirs(out, exist_ok=True)
    for fam in FAMILIES:
        src = os.path.join(zoo, f"{fam}__base.onnx")
        feeds = inputs_of(os.path.join(zoo, f"{fam}__base"))
        floats = run(src, feeds)
        for variant, make in VARIANTS.items():
            name = f"{fam}__{variant}"
            folder = os.path.join(out, name)
            if os.path.isdir(folder):
                continue
            path = os.path.join(out, name + ".onnx")
            make(src, path, feeds)
            tmp = folder + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            for k, v in feeds.items():
                np.save(os.path.join(tmp, f"input_{k}.npy"), v)
            for k, v in run(path, feeds).items():
                np.save(os.path.join(tmp, f"ort_output_{k}.npy"), v)
            for k, v in floats.items():
                np.save(os.path.join(tmp, f"float_output_{k}.npy"), v)
            os.rename(tmp, folder)
            print(f"gen_ort_quant: wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
