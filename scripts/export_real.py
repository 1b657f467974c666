#!/usr/bin/env python3
"""Export tiny transformers architectures with the torch dynamo ONNX exporter.

Usage: python3 scripts/export_real.py [OUT_DIR [NAME...]]     (default: tests/data/real, all)
       EXPORT_LAYERS=32 python3 scripts/export_real.py /tmp/real32 llama   (a 32-layer export)

For each architecture, a tiny config (hidden 64, 2 layers, 4 attention heads, 2 key-value
heads where the architecture has grouped-query attention, intermediate 128, vocab 256, max
positions 128) with random weights (fixed seed), eval mode, no KV cache, exported with
`torch.onnx.export(..., dynamo=True)` (weights embedded: one small .onnx per model) with
dynamic batch and sequence dims. Writes, as examples/models/generate.py does:
  OUT_DIR/NAME.onnx
  OUT_DIR/NAME/input_<input>.npy        batch 2 x seq 16, fixed ids (encoders: a padded mask)
  OUT_DIR/NAME/ort_output_<output>.npy  onnxruntime's outputs on those inputs
and prints, per model, the ops (domain:op_type, opset) the export contains.
Decoders take input_ids only and return logits; encoders take input_ids + attention_mask and
return last_hidden_state.
Needs: torch, transformers, onnxscript, onnx, onnxruntime, numpy.
"""
import collections
import os
import sys
import warnings

import numpy as np
import onnx
import torch
import transformers as tf

H, HEADS, KV_HEADS, FFN, VOCAB, POS = 64, 4, 2, 128, 256, 128
# EXPORT_LAYERS=32 exports deep variants for compile-time measurements (the committed files have 2).
LAYERS = int(os.environ.get("EXPORT_LAYERS", "2"))
BATCH, SEQ = 2, 16

COMMON = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              intermediate_size=FFN, max_position_embeddings=POS)
GQA = dict(COMMON, num_key_value_heads=KV_HEADS)


def configs():
    """(name, opset, kind, config class, kwargs, model class); kind is 'decoder'/'encoder'."""
    causal = tf.AutoModelForCausalLM
    return [
        ("gpt2", 18, "decoder", tf.GPT2Config,
         dict(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=POS,
              bos_token_id=0, eos_token_id=0), causal),
        ("llama", 18, "decoder", tf.LlamaConfig, GQA, causal),
        ("llama_op23", 23, "decoder", tf.LlamaConfig, GQA, causal),
        ("mistral", 18, "decoder", tf.MistralConfig, dict(GQA, sliding_window=None), causal),
        ("qwen2", 23, "decoder", tf.Qwen2Config, GQA, causal),
        ("phi3", 18, "decoder", tf.Phi3Config, dict(GQA, pad_token_id=0), causal),
        ("gpt_neox", 18, "decoder", tf.GPTNeoXConfig, COMMON, causal),
        ("opt", 18, "decoder", tf.OPTConfig,
         dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, ffn_dim=FFN,
              max_position_embeddings=POS, word_embed_proj_dim=H, pad_token_id=1), causal),
        ("gemma", 18, "decoder", tf.GemmaConfig, dict(GQA, head_dim=16), causal),
        ("bert", 18, "encoder", tf.BertConfig, COMMON, tf.BertModel),
        ("roberta", 18, "encoder", tf.RobertaConfig, dict(COMMON, max_position_embeddings=POS + 2), tf.RobertaModel),
        ("distilbert", 18, "encoder", tf.DistilBertConfig,
         dict(vocab_size=VOCAB, dim=H, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=POS),
         tf.DistilBertModel),
    ]


class Decoder(torch.nn.Module):
    """input_ids -> logits, no cache."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, position_ids=None):
        return self.m(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits


class Encoder(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build(cls, kwargs, model_cls, kind):
    cfg = cls(**kwargs)
    cfg._attn_implementation = "sdpa" if kind == "decoder" else "eager"
    m = model_cls.from_config(cfg) if hasattr(model_cls, "from_config") else model_cls(cfg)
    m.eval()
    return Decoder(m) if kind == "decoder" else Encoder(m)


def feeds_for(kind, seed, pad, opset):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (BATCH, SEQ)).astype(np.int64)
    if kind == "decoder" and opset < 23:
        return {"input_ids": ids}
    if kind == "decoder":
        # Opset 23 exports fuse the rotary embedding into RotaryEmbedding, whose cos/sin
        # caches onnxruntime wants at the full batch: explicit position ids give them that.
        return {"input_ids": ids, "position_ids": np.tile(np.arange(SEQ, dtype=np.int64), (BATCH, 1))}
    mask = np.ones((BATCH, SEQ), dtype=np.int64)
    mask[1, SEQ - 5:] = 0  # second sentence padded: 11 real tokens
    ids[1, SEQ - 5:] = pad
    return {"input_ids": ids, "attention_mask": mask}


def op_list(model):
    """Sorted (domain:op_type, opset) with counts, functions inlined by the exporter."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    count = collections.Counter()
    for n in model.graph.node:
        dom = n.domain or "ai.onnx"
        count[(f"{dom}:{n.op_type}", opsets.get(dom, 0))] += 1
    return count


def export(name, opset, kind, cls, kwargs, model_cls, out_dir, seed):
    torch.manual_seed(seed)
    model = build(cls, kwargs, model_cls, kind)
    feeds = feeds_for(kind, seed, model.m.config.pad_token_id or 0, opset)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=POS)
    dyn = {k: {0: batch, 1: seq} for k in feeds}
    path = os.path.join(out_dir, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=opset, dynamic_shapes=dyn,
                                 input_names=list(feeds), output_names=["logits" if kind == "decoder"
                                                                        else "last_hidden_state"],
                                 external_data=False, verbose=False)
    prog.save(path, external_data=False)
    m = onnx.load(path)
    # The exporter records a stack trace and module names on every node; they double the
    # file's size and mean nothing to a runtime: drop them.
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        del v.metadata_props[:]
    onnx.save(m, path)
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref_dir = os.path.join(out_dir, name)
    os.makedirs(ref_dir, exist_ok=True)
    for k, v in feeds.items():
        np.save(os.path.join(ref_dir, f"input_{k}.npy"), v)
    outs = sess.run(None, feeds)
    with torch.no_grad():
        want = model(*args).numpy()
    err = float(np.abs(outs[0] - want).max())
    for o, val in zip(sess.get_outputs(), outs):
        np.save(os.path.join(ref_dir, f"ort_output_{o.name}.npy"), val)
    ops = op_list(m)
    print(f"{path}: opset {opset}, {len(m.graph.node)} nodes, {os.path.getsize(path)} bytes, "
          f"onnxruntime vs torch max abs {err:.2e}")
    for (op, ver), c in sorted(ops.items()):
        print(f"  {op} (opset {ver}) x{c}")
    return name, opset, len(m.graph.node), ops


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests/data/real")
    only = set(sys.argv[2:])
    os.makedirs(out_dir, exist_ok=True)
    for i, spec in enumerate(configs()):
        if only and spec[0] not in only:
            continue
        try:
            export(*spec, out_dir, seed=20261202 + i)
        except Exception as e:  # report and go on: one architecture failing must not hide the rest
            print(f"{spec[0]}: export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
