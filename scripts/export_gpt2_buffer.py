#!/usr/bin/env python3
"""Export a tiny GPT-2 whose causal mask is a stored buffer (tests/data/real/gpt2_eager_ts).

Usage: python3 scripts/export_gpt2_buffer.py [OUT_DIR]     (default: tests/data/real)

transformers 4.44's GPT-2 with eager attention slices its registered `attn.bias` buffer
([1, 1, n_positions, n_positions] booleans) in every layer; the TorchScript exporter
(`dynamo=False`, opset 17, how most published GPT-2 ONNX files were made) stores it as a
constant, and a plan used to store it on every rank. The import phase `masks`
(compiler/src/onnx/masks.rs) computes it instead. Same tiny sizes as scripts/export_real.py
(hidden 64, 2 layers, 4 heads, FFN 128, vocab 256, 128 positions), no KV cache, inputs
batch 2 x seq 96 (a 96 x 96 mask: over the canonicaliser's 4,096-element folding limit,
so it stays computed). Writes OUT_DIR/gpt2_eager_ts.onnx, OUT_DIR/gpt2_eager_ts/
input_input_ids.npy and ort_output_logits.npy (onnxruntime's outputs).
Needs: torch, transformers 4.44 (newer decoders no longer trace), onnx, onnxruntime, numpy.
"""
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/data/real")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_inner=128,
                     n_positions=128, bos_token_id=0, eos_token_id=0, use_cache=False)
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).eval()
    ids = np.random.default_rng(0).integers(3, 256, (2, 96)).astype(np.int64)
    path = os.path.join(out, "gpt2_eager_ts.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(ids),), path, input_names=["input_ids"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})
    d = os.path.join(out, "gpt2_eager_ts")
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "input_input_ids.npy"), ids)
    logits = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0]
    np.save(os.path.join(d, "ort_output_logits.npy"), logits)
    print(path, logits.shape)


if __name__ == "__main__":
    main()
