#!/usr/bin/env python3
"""Export tiny transformers models of other modalities with the torch dynamo ONNX exporter.

Usage: python3 scripts/export_modal.py OUT_DIR [NAME...]

scripts/export_real.py covers text decoders and encoders; this script covers what it does
not: vision transformers (ViT, DeiT, BEiT, DINOv2, CLIP and SigLIP vision towers, Swin-V2,
SegFormer, MobileViT, ConvNeXt-V2, PVT-V2), speech encoders (Wav2Vec2, HuBERT, WavLM,
Whisper's encoder, the Audio Spectrogram Transformer) and encoder-decoders (T5, BART,
Marian, Pegasus, Whisper) plus CLIP's text tower and the whole CLIP. Tiny configs (hidden
64, 2 layers, 4 heads) with random weights (fixed seed), eval mode, no KV cache. Writes, as
export_real.py does, OUT_DIR/NAME.onnx, OUT_DIR/NAME/input_<input>.npy and
OUT_DIR/NAME/ort_output_<output>.npy (torch_output_*.npy where onnxruntime cannot run the
export), for scripts/sweep_real.py. The model's first output is exported (the last hidden
state, logits, or CLIP's image-text logits).
EXPORTER=legacy exports with the TorchScript exporter instead (scripts/export_real.py).
Needs: torch, transformers, onnxscript, onnx, onnxruntime, numpy.
"""
import os
import sys

import numpy as np
import onnx
import torch

from export_real import export_onnx, op_list, tf, write_references

H, HEADS, FFN, VOCAB = 64, 4, 128, 256
# EXPORT_LAYERS=6 exports deeper variants (compile-time measurements).
LAYERS = int(os.environ.get("EXPORT_LAYERS", "2"))
BATCH = 2
TEXT = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=FFN)
VIT = dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
           image_size=32, patch_size=8)
AUDIO = dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
             conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32)
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=H, encoder_layers=LAYERS, decoder_layers=LAYERS,
               encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
               decoder_ffn_dim=FFN, max_position_embeddings=128, pad_token_id=1,
               decoder_start_token_id=2)


def image(seed, side=32, channels=3):
    return {"pixel_values": np.random.default_rng(seed).standard_normal(
        (BATCH, channels, side, side)).astype(np.float32)}


def text(seed, seq=16, pad=0, names=("input_ids", "attention_mask")):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (BATCH, seq)).astype(np.int64)
    mask = np.ones((BATCH, seq), dtype=np.int64)
    mask[1, seq - 5:] = 0
    ids[1, seq - 5:] = pad
    return dict(zip(names, (ids, mask)))


def seq2seq(seed):
    feeds = text(seed, pad=1)
    feeds["decoder_input_ids"] = np.random.default_rng(seed + 1).integers(
        3, VOCAB, (BATCH, 12)).astype(np.int64)
    return feeds


def audio(seed, samples=1600):
    return {"input_values": np.random.default_rng(seed).standard_normal(
        (BATCH, samples)).astype(np.float32)}


def features(seed, bins=16, frames=32):
    return {"input_features": np.random.default_rng(seed).standard_normal(
        (BATCH, bins, frames)).astype(np.float32)}


def specs():
    """(name, config class, kwargs, model class, feeds(seed) -> dict, dynamic dims per input)."""
    whisper = dict(vocab_size=VOCAB, d_model=H, encoder_layers=LAYERS, decoder_layers=LAYERS,
                   encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                   encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, num_mel_bins=16,
                   max_source_positions=16, max_target_positions=32, pad_token_id=1,
                   decoder_start_token_id=2, bos_token_id=2, eos_token_id=2)
    whisper_feeds = lambda s: dict(features(s), decoder_input_ids=np.random.default_rng(s).integers(
        3, VOCAB, (BATCH, 8)).astype(np.int64))
    clip_text = dict(TEXT, max_position_embeddings=128, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2)
    return [
        ("vit", tf.ViTConfig, VIT, tf.ViTModel, image, {}),
        ("deit", tf.DeiTConfig, VIT, tf.DeiTModel, image, {}),
        ("beit", tf.BeitConfig, dict(VIT, use_relative_position_bias=True), tf.BeitModel, image, {}),
        ("dinov2", tf.Dinov2Config, dict(VIT, mlp_ratio=2), tf.Dinov2Model, image, {}),
        ("clip_vision", tf.CLIPVisionConfig, VIT, tf.CLIPVisionModel, image, {}),
        ("siglip_vision", tf.SiglipVisionConfig, VIT, tf.SiglipVisionModel, image, {}),
        ("swinv2", tf.Swinv2Config, dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2],
                                         num_heads=[2, 4], window_size=4), tf.Swinv2Model,
         image, {}),
        ("segformer", tf.SegformerConfig, dict(num_encoder_blocks=2, depths=[1, 1],
                                               sr_ratios=[2, 1], hidden_sizes=[16, 32],
                                               patch_sizes=[7, 3], strides=[4, 2],
                                               num_attention_heads=[1, 2], mlp_ratios=[2, 2]),
         tf.SegformerModel, image, {}),
        ("mobilevit", tf.MobileViTConfig, dict(image_size=32, hidden_sizes=[32, 48, 64],
                                               neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64]),
         tf.MobileViTModel, image, {}),
        ("convnextv2", tf.ConvNextV2Config, dict(hidden_sizes=[16, 32], depths=[1, 1],
                                                 num_stages=2), tf.ConvNextV2Model, image, {}),
        ("pvt_v2", tf.PvtV2Config, dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                        hidden_sizes=[16, 32], patch_sizes=[7, 3],
                                        strides=[4, 2], num_attention_heads=[1, 2],
                                        mlp_ratios=[2, 2]), tf.PvtV2Model, image, {}),
        ("wav2vec2", tf.Wav2Vec2Config, AUDIO, tf.Wav2Vec2Model, audio, {"input_values": [0]}),
        ("hubert", tf.HubertConfig, AUDIO, tf.HubertModel, audio, {"input_values": [0]}),
        ("wavlm", tf.WavLMConfig, dict(AUDIO, num_buckets=32, max_bucket_distance=64),
         tf.WavLMModel, audio, {"input_values": [0]}),
        ("whisper_encoder", tf.WhisperConfig, whisper, "encoder", features, {}),
        ("ast", tf.ASTConfig, dict(VIT, num_mel_bins=16, max_length=32, patch_size=8,
                                   frequency_stride=8, time_stride=8), tf.ASTModel,
         lambda s: {"input_values": np.random.default_rng(s).standard_normal(
             (BATCH, 32, 16)).astype(np.float32)}, {}),
        ("t5", tf.T5Config, dict(vocab_size=VOCAB, d_model=H, d_kv=16, d_ff=FFN,
                                 num_layers=LAYERS, num_heads=HEADS, decoder_start_token_id=0,
                                 pad_token_id=0), tf.T5Model, seq2seq, None),
        ("bart", tf.BartConfig, SEQ2SEQ, tf.BartModel, seq2seq, None),
        ("marian", tf.MarianConfig, SEQ2SEQ, tf.MarianModel, seq2seq, None),
        ("pegasus", tf.PegasusConfig, SEQ2SEQ, tf.PegasusModel, seq2seq, None),
        ("whisper", tf.WhisperConfig, whisper, tf.WhisperModel, whisper_feeds, {}),
        ("clip_text", tf.CLIPTextConfig, clip_text, tf.CLIPTextModel,
         lambda s: text(s, pad=1), None),
        ("clip", tf.CLIPConfig, dict(text_config=clip_text, vision_config=VIT,
                                     projection_dim=32), tf.CLIPModel,
         lambda s: dict(text(s, pad=1), **image(s + 1)), {}),
    ]


class First(torch.nn.Module):
    """The model's first output, whatever the model returns."""

    def __init__(self, m, names):
        super().__init__()
        self.m, self.names = m, names

    def forward(self, *args):
        out = self.m(**dict(zip(self.names, args)))
        return out[0]


def build(cls, kwargs, model_cls):
    cfg = cls(**kwargs)
    cfg._attn_implementation = "eager"
    if model_cls == "encoder":
        m = tf.WhisperModel(cfg).get_encoder()
    else:
        m = model_cls(cfg)
    return m.eval()


def export(name, cls, kwargs, model_cls, feeds_fn, dynamic, out_dir, seed):
    torch.manual_seed(seed)
    m = build(cls, kwargs, model_cls)
    feeds = feeds_fn(seed)
    names = list(feeds)
    model = First(m, names)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    # Dynamic batch everywhere; token inputs (dynamic None) also a dynamic sequence.
    batch = torch.export.Dim("batch", min=1, max=64)
    if dynamic is None:
        dyn = {k: {0: batch, 1: torch.export.Dim(f"seq_{k}", min=2, max=128)} for k in names}
    else:
        dyn = {k: {0: batch} for k in names}
    path = os.path.join(out_dir, f"{name}.onnx")
    axes = {k: ({0: "batch"} if dynamic is not None else {0: "batch", 1: f"seq_{k}"}) for k in names}
    with torch.no_grad():
        want = model(*args).numpy()
    onx = export_onnx(model, args, path, names, "output", 18, (tuple(dyn[k] for k in names),),
                      axes)
    err = write_references(name, path, os.path.join(out_dir, name), feeds, want, "output")
    print(f"{path}: {len(onx.graph.node)} nodes, {os.path.getsize(path)} bytes, inputs "
          f"{ {k: v.shape for k, v in feeds.items()} }, onnxruntime vs torch max abs {err:.2e}")
    for (op, ver), c in sorted(op_list(onx).items()):
        print(f"  {op} (opset {ver}) x{c}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_dir, only = sys.argv[1], set(sys.argv[2:])
    os.makedirs(out_dir, exist_ok=True)
    for i, spec in enumerate(specs()):
        if only and spec[0] not in only:
            continue
        try:
            export(*spec, out_dir, seed=20261206 + i)
        except Exception as e:  # report and go on: one architecture failing must not hide the rest
            msg = str(e).splitlines()[0] if str(e) else ""
            print(f"{spec[0]}: export failed: {type(e).__name__}: {msg[:300]}")


if __name__ == "__main__":
    main()
