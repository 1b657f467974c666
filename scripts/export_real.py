#!/usr/bin/env python3
"""Export tiny transformers architectures with the torch dynamo ONNX exporter.

Usage: python3 scripts/export_real.py [OUT_DIR [NAME...]]     (default: tests/data/real, all)
       EXPORT_LAYERS=32 python3 scripts/export_real.py /tmp/real32 llama   (a 32-layer export)
       python3 scripts/export_real.py --extra /tmp/sweep   (also the architectures not committed,
                                                            for scripts/sweep_real.py)
       python3 scripts/export_real.py --more /tmp/sweep2 mixtral mamba ...   (a second sweep:
                                                            mixtures of experts, state-space, ...)
       EXPORTER=legacy python3 scripts/export_real.py --extra /tmp/legacy   (the TorchScript
           exporter, dynamo=False, at opset 17: how optimum and most published ONNX files were
           made; files NAME_ts.onnx; EXPORTER=legacy:14 for opset 14, NAME_ts14.onnx.
           Transformers 5's decoders no longer trace: run it with transformers 4.44,
           docs/real_exports.md)

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
import transformers as _transformers


class _Classes:
    """transformers' classes by name; one this version lacks fails only its own export."""

    def __getattr__(self, name):
        try:
            return getattr(_transformers, name)
        except AttributeError:
            def missing(*_args, **_kwargs):
                raise RuntimeError(f"transformers {_transformers.__version__} has no {name}")
            missing.from_config = missing
            return missing


tf = _Classes()

H, HEADS, KV_HEADS, FFN, VOCAB, POS = 64, 4, 2, 128, 256, 128
# EXPORT_LAYERS=32 exports deep variants for compile-time measurements (the committed files have 2).
LAYERS = int(os.environ.get("EXPORT_LAYERS", "2"))
# EXPORTER=legacy[:OPSET] exports with the TorchScript exporter (dynamo=False) at opset
# min(OPSET, the model's), OPSET 17 by default: the exporter of most published ONNX models.
_EXPORTER = os.environ.get("EXPORTER", "dynamo").split(":")
LEGACY = _EXPORTER[0] == "legacy"
LEGACY_OPSET = int(_EXPORTER[1]) if len(_EXPORTER) > 1 else 17
# The inputs written beside each export (EXPORT_BATCH, EXPORT_SEQ override them).
BATCH = int(os.environ.get("EXPORT_BATCH", "2"))
SEQ = int(os.environ.get("EXPORT_SEQ", "16"))

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
        # Falcon-7B's layout: multi-query attention (one key/value head), attention and MLP
        # in parallel off one LayerNorm.
        ("falcon", 18, "decoder", tf.FalconConfig,
         dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              new_decoder_architecture=False, multi_query=True, alibi=False, parallel_attn=True), causal),
        # StarCoder's multi-query attention with a fused [H, H + 2·head_dim] QKV projection.
        ("gpt_bigcode", 18, "decoder", tf.GPTBigCodeConfig,
         dict(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=POS,
              multi_query=True), causal),
        # ALiBi position biases instead of position embeddings (eager attention).
        ("bloom", 18, "decoder", tf.BloomConfig, dict(vocab_size=VOCAB, hidden_size=H, n_layer=LAYERS, n_head=HEADS),
         causal),
        # Sliding-window and full attention layers in turn (two masks read alternately),
        # logit soft-capping, norms before and after each branch: 4 layers, so the
        # alternation repeats.
        ("gemma2", 18, "decoder", tf.Gemma2Config,
         dict(GQA, num_hidden_layers=max(LAYERS, 4), head_dim=16, sliding_window=8), causal),
        # Relative position buckets computed by the first layer and shared by the rest:
        # 3 layers, so two of them repeat.
        ("t5_encoder", 18, "encoder", tf.T5Config,
         dict(vocab_size=VOCAB, d_model=H, d_kv=16, d_ff=FFN, num_layers=max(LAYERS, 3), num_heads=HEADS),
         tf.T5EncoderModel),
        # Disentangled attention (content-to-position and position-to-content terms).
        ("deberta_v2", 18, "encoder", tf.DebertaV2Config, COMMON, tf.DebertaV2Model),
        # Sliding-window and full-attention layers in an irregular order (transformers 5's
        # OLMo-3, `layer_types`): no period covers the four layers, so the search cuts the
        # graph into a chain of blocks that differ. Committed with inputs of 2 x 128
        # (`EXPORT_BATCH=2 EXPORT_SEQ=128`): at 16 positions its masks fold alike and the
        # layers repeat.
        ("olmo3_irregular", 18, "decoder", tf.Olmo3Config,
         dict(GQA, num_hidden_layers=4, sliding_window=8,
              layer_types=["sliding_attention", "full_attention", "full_attention",
                           "sliding_attention"]), causal),
    ]


def extra_configs():
    """Architectures exported for the sweep (scripts/sweep_real.py), not committed."""
    causal = tf.AutoModelForCausalLM
    c = COMMON
    g = GQA
    return [
        ("falcon_alibi", 18, "decoder", tf.FalconConfig,
         dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              multi_query=False, alibi=True, parallel_attn=False), causal),
        ("gptj", 18, "decoder", tf.GPTJConfig,
         dict(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=POS,
              rotary_dim=8), causal),
        ("codegen", 18, "decoder", tf.CodeGenConfig,
         dict(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=POS, n_ctx=POS,
              rotary_dim=8, pad_token_id=0, bos_token_id=0, eos_token_id=0), causal),
        ("stablelm", 18, "decoder", tf.StableLmConfig, dict(g, partial_rotary_factor=0.25), causal),
        ("phi", 18, "decoder", tf.PhiConfig, dict(c, partial_rotary_factor=0.5), causal),
        ("qwen3", 18, "decoder", tf.Qwen3Config, dict(g, head_dim=16), causal),
        ("gemma3", 18, "decoder", tf.Gemma3TextConfig, dict(g, head_dim=16, sliding_window=8), causal),
        ("olmo", 18, "decoder", tf.OlmoConfig, g, causal),
        ("olmo2", 18, "decoder", tf.Olmo2Config, g, causal),
        ("granite", 18, "decoder", tf.GraniteConfig, g, causal),
        ("cohere", 18, "decoder", tf.CohereConfig, g, causal),
        ("starcoder2", 18, "decoder", tf.Starcoder2Config, dict(g, sliding_window=None), causal),
        ("xglm", 18, "decoder", tf.XGLMConfig,
         dict(vocab_size=VOCAB, d_model=H, num_layers=LAYERS, attention_heads=HEADS, ffn_dim=FFN,
              max_position_embeddings=POS), causal),
        ("mpt", 18, "decoder", tf.MptConfig,
         dict(vocab_size=VOCAB, d_model=H, n_layers=LAYERS, n_heads=HEADS, expansion_ratio=2, max_seq_len=POS),
         causal),
        ("nemotron", 18, "decoder", tf.NemotronConfig, dict(g, head_dim=16), causal),
        ("smollm3", 18, "decoder", tf.SmolLM3Config, dict(g, pad_token_id=0, bos_token_id=0, eos_token_id=0),
         causal),
        ("electra", 18, "encoder", tf.ElectraConfig, dict(c, embedding_size=32), tf.ElectraModel),
        ("albert", 18, "encoder", tf.AlbertConfig, dict(c, embedding_size=32), tf.AlbertModel),
        ("xlm_roberta", 18, "encoder", tf.XLMRobertaConfig, dict(c, max_position_embeddings=POS + 2),
         tf.XLMRobertaModel),
        ("mpnet", 18, "encoder", tf.MPNetConfig, dict(c, max_position_embeddings=POS + 2), tf.MPNetModel),
        ("mobilebert", 18, "encoder", tf.MobileBertConfig,
         dict(c, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, num_feedforward_networks=2),
         tf.MobileBertModel),
        ("modernbert", 18, "encoder", tf.ModernBertConfig,
         dict(c, num_hidden_layers=max(LAYERS, 3), global_attn_every_n_layers=1, pad_token_id=0, bos_token_id=0,
              eos_token_id=0, cls_token_id=1, sep_token_id=2), tf.ModernBertModel),
        ("ernie", 18, "encoder", tf.ErnieConfig, c, tf.ErnieModel),
        ("squeezebert", 18, "encoder", tf.SqueezeBertConfig, dict(c, embedding_size=H), tf.SqueezeBertModel),
    ]


def more_configs():
    """A second sweep (`--more`): mixtures of experts, local attention, state-space and other
    families the first sweep does not cover."""
    causal = tf.AutoModelForCausalLM
    c = COMMON
    g = GQA
    moe = dict(g, num_local_experts=4, num_experts_per_tok=2)
    return [
        ("mixtral", 18, "decoder", tf.MixtralConfig, dict(moe, sliding_window=None), causal),
        ("qwen2_moe", 18, "decoder", tf.Qwen2MoeConfig,
         dict(g, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
              shared_expert_intermediate_size=64), causal),
        ("olmoe", 18, "decoder", tf.OlmoeConfig, dict(g, num_experts=4, num_experts_per_tok=2), causal),
        ("gpt_neo", 18, "decoder", tf.GPTNeoConfig,
         dict(vocab_size=VOCAB, hidden_size=H, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN,
              max_position_embeddings=POS, attention_types=[[["global", "local"], LAYERS // 2]],
              window_size=8), causal),
        ("biogpt", 18, "decoder", tf.BioGptConfig, c, causal),
        ("persimmon", 18, "decoder", tf.PersimmonConfig, c, causal),
        ("glm", 18, "decoder", tf.GlmConfig, dict(g, head_dim=16), causal),
        ("helium", 18, "decoder", tf.HeliumConfig, dict(g, head_dim=16), causal),
        ("exaone4", 18, "decoder", tf.Exaone4Config, dict(g, head_dim=16, sliding_window=None), causal),
        ("mamba", 18, "decoder", tf.MambaConfig,
         dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, state_size=8, expand=2,
              use_mambapy=False), causal),
        ("ctrl", 18, "decoder", tf.CTRLConfig,
         dict(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, dff=FFN, n_positions=POS), causal),
        ("camembert", 18, "encoder", tf.CamembertConfig, dict(c, max_position_embeddings=POS + 2),
         tf.CamembertModel),
        ("funnel", 18, "encoder", tf.FunnelConfig,
         dict(vocab_size=VOCAB, d_model=H, n_head=HEADS, d_head=16, d_inner=FFN, block_sizes=[1, 1],
              num_decoder_layers=1), tf.FunnelBaseModel),
        ("layoutlm", 18, "encoder", tf.LayoutLMConfig, c, tf.LayoutLMModel),
        ("nystromformer", 18, "encoder", tf.NystromformerConfig, dict(c, num_landmarks=4,
                                                                       segment_means_seq_len=SEQ),
         tf.NystromformerModel),
        ("rembert", 18, "encoder", tf.RemBertConfig,
         dict(c, input_embedding_size=32, output_embedding_size=32), tf.RemBertModel),
        ("roformer", 18, "encoder", tf.RoFormerConfig, dict(c, embedding_size=H), tf.RoFormerModel),
        ("convbert", 18, "encoder", tf.ConvBertConfig, dict(c, embedding_size=H), tf.ConvBertModel),
    ]


class Decoder(torch.nn.Module):
    """input_ids -> logits, no cache."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, position_ids=None):
        # Only where given: some architectures' forward (OPT, MPT in transformers 4.x) has none.
        pos = {} if position_ids is None else {"position_ids": position_ids}
        return self.m(input_ids=input_ids, use_cache=False, **pos).logits


class Encoder(torch.nn.Module):
    """(input_ids, attention_mask) -> last_hidden_state."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build(cls, kwargs, model_cls, kind):
    cfg = cls(**kwargs)
    # Decoders with torch's SDPA where the architecture has it (eager attention otherwise).
    cfg._attn_implementation = "sdpa" if kind == "decoder" else "eager"
    try:
        m = model_cls.from_config(cfg) if hasattr(model_cls, "from_config") else model_cls(cfg)
    except ValueError as e:
        if "scaled_dot_product_attention" not in str(e):
            raise
        cfg._attn_implementation = "eager"
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


def save_stripped(prog, path):
    """Saves an exported program to `path` (weights embedded) without the stack trace and
    module names the exporter records on every node (they double the file's size and mean
    nothing to a runtime); returns the saved model."""
    prog.save(path, external_data=False)
    m = onnx.load(path)
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        del v.metadata_props[:]
    onnx.save(m, path)
    return m


def write_references(name, path, ref_dir, feeds, want, out_name):
    """Writes ref_dir/input_*.npy and onnxruntime's outputs ort_output_*.npy (where
    onnxruntime cannot run the export: PyTorch's `want` as torch_output_<out_name>.npy);
    returns onnxruntime's max abs difference to PyTorch (NaN without it)."""
    import onnxruntime as ort
    os.makedirs(ref_dir, exist_ok=True)
    for k, v in feeds.items():
        np.save(os.path.join(ref_dir, f"input_{k}.npy"), v)
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime lacks a kernel: PyTorch is the reference
        print(f"{name}: onnxruntime cannot run the export ({str(e).splitlines()[0][:160]}); "
              f"torch_output_{out_name}.npy is the reference")
        np.save(os.path.join(ref_dir, f"torch_output_{out_name}.npy"), want)
        return float("nan")
    for o, val in zip(sess.get_outputs(), outs):
        np.save(os.path.join(ref_dir, f"ort_output_{o.name}.npy"), val)
    return float(np.abs(outs[0] - want).max())


def export_onnx(model, args, path, input_names, out_name, opset, dynamic_shapes, dynamic_axes):
    """Exports `model` on `args` to `path` (weights embedded) and returns the saved model:
    with the dynamo exporter (`dynamic_shapes`; per-node metadata stripped) or, under
    EXPORTER=legacy, with the TorchScript exporter (`dynamic_axes` by name, opset at most
    LEGACY_OPSET, constants folded as optimum does). Call the model for references first:
    the TorchScript exporter leaves it in training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if LEGACY:
            axes = dict(dynamic_axes, **{out_name: {0: "batch"}})
            torch.onnx.export(model, args, path, dynamo=False,
                              opset_version=min(opset, LEGACY_OPSET), input_names=input_names,
                              output_names=[out_name], dynamic_axes=axes,
                              do_constant_folding=True)
            model.eval()
            return onnx.load(path)
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=opset,
                                 dynamic_shapes=dynamic_shapes, input_names=input_names,
                                 output_names=[out_name], external_data=False, verbose=False)
    return save_stripped(prog, path)


def export(name, opset, kind, cls, kwargs, model_cls, out_dir, seed):
    torch.manual_seed(seed)
    model = build(cls, kwargs, model_cls, kind)
    feeds = feeds_for(kind, seed, model.m.config.pad_token_id or 0, opset)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=POS)
    dyn = {k: {0: batch, 1: seq} for k in feeds}
    # PyTorch's output first: the TorchScript exporter leaves the model in training mode.
    with torch.no_grad():
        want = model(*args).numpy()
    if LEGACY:  # beside the dynamo export of the same model; the opset named unless 17
        name = f"{name}_ts" if LEGACY_OPSET == 17 else f"{name}_ts{LEGACY_OPSET}"
    path = os.path.join(out_dir, f"{name}.onnx")
    out_name = "logits" if kind == "decoder" else "last_hidden_state"
    axes = {k: {0: "batch", 1: "seq"} for k in feeds}
    m = export_onnx(model, args, path, list(feeds), out_name, opset, dyn, axes)
    err = write_references(name, path, os.path.join(out_dir, name), feeds, want, out_name)
    ops = op_list(m)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    print(f"{path}: opset {opset}, {len(m.graph.node)} nodes, {os.path.getsize(path)} bytes, "
          f"onnxruntime vs torch max abs {err:.2e}")
    for (op, ver), c in sorted(ops.items()):
        print(f"  {op} (opset {ver}) x{c}")
    return name, opset, len(m.graph.node), ops


def main():
    args = sys.argv[1:]
    extra = "--extra" in args
    more = "--more" in args
    args = [a for a in args if a not in ("--extra", "--more")]
    out_dir = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "tests/data/real")
    only = set(args[1:])
    os.makedirs(out_dir, exist_ok=True)
    specs = configs() + (extra_configs() if extra else []) + (more_configs() if more else [])
    for i, spec in enumerate(specs):
        if only and spec[0] not in only:
            continue
        try:
            export(*spec, out_dir, seed=20261202 + i)
        except Exception as e:  # report and go on: one architecture failing must not hide the rest
            print(f"{spec[0]}: export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
