#!/usr/bin/env python3
"""Generate the synthetic export zoo: 4 model families, each exported in 8 or 9 idioms.

Usage: python3 scripts/gen_zoo.py OUT_DIR

Writes OUT_DIR/FAMILY__VARIANT.onnx, OUT_DIR/FAMILY__VARIANT/{input_*.npy, ort_output_*.npy}
(sample inputs, batch 2 x seq 16, and onnxruntime's outputs on them, as
examples/models/generate.py does) and OUT_DIR/zoo.json (the index, with each family's
Megatron hand-plan collective bytes and each file's parameter bytes).

Families (hidden 64, 4 heads of 16, 2 layers, vocab 256, 128 positions, opset 18):
  mlp    x[B,S,64] -> 2 x (Linear 64->256, GELU(erf), Linear 256->64)
  bert   post-LN encoder: word + position embedding, LayerNorm, additive mask from
         attention_mask, separate Q/K/V, FFN 128 with GELU; output last_hidden_state
  gpt2   pre-LN decoder: fused QKV + Split, Where causal mask, FFN 256 with GELU, tied LM head
  llama  RMSNorm, rotary, GQA (4 query / 2 key-value heads, Expand+Reshape repeat), SwiGLU 128,
         additive causal mask, untied LM head
Variants (same parameter values in every variant of a family; see scripts/zoo_idioms.py):
  base       the exporter idioms above
  swapped    the operands of every Add and Mul swapped
  recip      every Div by a constant written as Mul by its precomputed reciprocal
  identity   an Identity after most ops; every node, initializer and inner tensor renamed
  decomposed LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add, GELU in its tanh
             form (numerically different from erf: its own reference), RMSNorm in three forms
             (Mul x*x + Sqrt + Div; weight first + Reciprocal; Pow + Sqrt + Reciprocal + Mul),
             SiLU as x / (1 + exp(-x))
  gemm       linears cycle through Gemm(transB=1) on the flattened input, Add(b, MatMul) and
             MatMul(x, Transpose(W stored transposed)); the tied head as Gemm(transB=1)
The idiom cycles (linear forms, RMSNorm forms) restart at every layer: the layers of one file
stay identical, as an exporter writes them.
  qkv        (attention families) fused <-> separate Q/K/V, scale before QK^T, Div <-> Mul,
             additive <-> Where(boolean) mask
  int8       every MatMul weight int8 with a per-column scale: Mul(Cast(Wq), scale)
  int8zp     uint8 with zero point: Mul(Sub(Cast(Wq), Cast(zp)), scale)
The int8 variants compute with the dequantised weights: their references are their own.
Needs: onnx, numpy, onnxruntime.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from zoo_idioms import Z, finish, quantise, value

import generate as ex  # examples/models/generate.py (on sys.path via zoo_idioms)

H, NH, NKV, HD, LAYERS, VOCAB, MAXPOS = 64, 4, 2, 16, 2, 256, 128
FFN = {"mlp": 256, "bert": 128, "gpt2": 256, "llama": 128}
TEST_BS, COMPILE_BS = (2, 16), (8, 128)
COMMON = ["base", "swapped", "recip", "identity", "decomposed", "gemm"]
VARIANTS = {
    "mlp": COMMON + ["int8", "int8zp"],
    "bert": COMMON + ["qkv", "int8", "int8zp"],
    "gpt2": COMMON + ["qkv", "int8", "int8zp"],
    "llama": COMMON + ["qkv", "int8", "int8zp"],
}
# Variants whose arithmetic differs from base (their outputs are compared with their own
# onnxruntime reference only).
OWN_ARITHMETIC = {"int8", "int8zp"}


def vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def positions(z, ids):
    seq = z.op("Squeeze", [z.dim(ids, 1), z.c([0])])
    return z.op("Unsqueeze", [z.op("Range", [z.c(0), seq, z.c(1)]), z.c([0])])


def output(z, name):
    z.nodes[-1].output[0] = name
    return name


def mlp(z):
    x = "x"
    for b in range(2):
        z.begin_layer()
        x = z.linear_w(x, f"blocks.{b}.fc1", H, FFN["mlp"])
        x = z.linear_w(z.gelu(x), f"blocks.{b}.fc2", FFN["mlp"], H)
    output(z, "y")
    return [vi("x", TensorProto.FLOAT, ["batch", "seq", H])], [vi("y", TensorProto.FLOAT, ["batch", "seq", H])]


def attention_scores(z, q, k, scale_first, mul_scale):
    """QK^T scaled by 1/sqrt(hd): after (base) or on q before; by Div or by Mul."""
    op, c = ("Mul", 1.0 / np.sqrt(HD)) if mul_scale else ("Div", np.sqrt(HD))
    if scale_first:
        q = z.op(op, [q, z.c(c, np.float32)])
    s = z.op("MatMul", [q, z.op("Transpose", [k], perm=[0, 1, 3, 2])])
    return s if scale_first else z.op(op, [s, z.c(c, np.float32)])


def qkv_proj(z, a, prefix, fused, bias, widths):
    """Q, K, V projections of a (widths = output widths), fused into one MatMul + Split or not;
    the values come from the separate q/k/v (bert, llama) or the fused c_attn (gpt2) weights."""
    names = [f"{prefix}.{n}" for n in ("q", "k", "v")]
    if z.fam == "gpt2":
        w = value(z.fam, f"{prefix}.c_attn.weight", (H, sum(widths)))
        b = value(z.fam, f"{prefix}.c_attn.bias", (sum(widths),), 0.1)
        cuts = np.cumsum([0] + widths)
        ws = [w[:, cuts[i]:cuts[i + 1]] for i in range(3)]
        bs = [b[cuts[i]:cuts[i + 1]] for i in range(3)]
    else:
        ws = [value(z.fam, f"{n}.weight", (H, wd)) for n, wd in zip(names, widths)]
        bs = [value(z.fam, f"{n}.bias", (wd,), 0.1) if bias else None for n, wd in zip(names, widths)]
    if fused:
        b = np.concatenate(bs) if bias else None
        y = z.linear_arr(a, f"{prefix}.qkv", np.concatenate(ws, axis=1), b)
        return z.op("Split", [y, z.c(widths)], n_out=3, axis=2)
    return [z.linear_arr(a, n, w, b) for n, w, b in zip(names, ws, bs)]


def bert(z):
    ids, am = "input_ids", "attention_mask"
    qkv = z.var == "qkv"
    wte = z.param("embeddings.word_embeddings", (VOCAB, H), 0.5)
    wpe = z.param("embeddings.position_embeddings", (MAXPOS, H), 0.1)
    x = z.op("Add", [z.op("Gather", [wte, ids], axis=0), z.op("Gather", [wpe, positions(z, ids)], axis=0)])
    x = z.layernorm(x, H, "embeddings.LayerNorm")
    if qkv:  # boolean mask for Where
        mask = z.op("Unsqueeze", [z.op("Cast", [am], to=TensorProto.BOOL), z.c([1, 2])])
    else:  # additive: (1 - mask) * -10000
        m = z.op("Sub", [z.c(1.0, np.float32), z.op("Cast", [am], to=TensorProto.FLOAT)])
        mask = z.op("Unsqueeze", [z.op("Mul", [m, z.c(-10000.0, np.float32)]), z.c([1, 2])])
    for l in range(LAYERS):
        p = f"encoder.layer.{l}"
        z.begin_layer()
        q, k, v = qkv_proj(z, x, f"{p}.attention", qkv, True, [H, H, H])
        q, k, v = (z.heads(t, NH, HD) for t in (q, k, v))
        s = attention_scores(z, q, k, scale_first=qkv, mul_scale=qkv)
        if qkv:
            s = z.op("Where", [mask, s, z.c(np.finfo(np.float32).min, np.float32)])
        else:
            s = z.op("Add", [s, mask])
        o = z.merge_heads(z.op("MatMul", [z.op("Softmax", [s], axis=-1), v]), H, x)
        o = z.linear_w(o, f"{p}.attention.output.dense", H, H)
        x = z.layernorm(z.op("Add", [x, o]), H, f"{p}.attention.output.LayerNorm")
        f = z.gelu(z.linear_w(x, f"{p}.intermediate.dense", H, FFN["bert"]))
        f = z.linear_w(f, f"{p}.output.dense", FFN["bert"], H)
        x = z.layernorm(z.op("Add", [x, f]), H, f"{p}.output.LayerNorm")
    output(z, "last_hidden_state")
    inp = [vi(ids, TensorProto.INT64, ["batch", "seq"]), vi(am, TensorProto.INT64, ["batch", "seq"])]
    return inp, [vi("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", H])]


def tied_embedding(z, name):
    """The token embedding [V, H]; in the int8 variants stored quantised per row (= per column
    of the LM head's weight wte^T) and dequantised once for both the Gather and the head."""
    wte = value(z.fam, name, (VOCAB, H), 0.5)
    if z.var not in ("int8", "int8zp"):
        return z.w(name, wte)
    q, scale, zp, _ = quantise(np.ascontiguousarray(wte.T), z.var == "int8zp")
    qf = z.op("Cast", [z.w(f"{name}.q", np.ascontiguousarray(q.T))], to=TensorProto.FLOAT)
    if zp is not None:
        qf = z.op("Sub", [qf, z.op("Cast", [z.w(f"{name}.zero_point", zp[:, None])], to=TensorProto.FLOAT)])
    return z.op("Mul", [qf, z.w(f"{name}.scale", scale[:, None])])


def additive_causal(z, s, q):
    """GPT-2's causal buffer written additively: Slice of a [1,1,P,P] 0 / -1e9 buffer, added."""
    buf = np.where(np.tril(np.ones((MAXPOS, MAXPOS), dtype=bool)), 0.0, -1e9).astype(np.float32)
    n = z.dim(q, 2)
    m = z.op("Slice", [z.w(z.name("attn.bias"), buf[None, None]), z.c([0, 0]), z.op("Concat", [n, n], axis=0), z.c([2, 3])])
    return z.op("Add", [s, m])


def gpt2(z):
    ids = "input_ids"
    qkv = z.var == "qkv"
    wte = tied_embedding(z, "wte")
    wpe = z.param("wpe", (MAXPOS, H), 0.1)
    x = z.op("Add", [z.op("Gather", [wte, ids], axis=0), z.op("Gather", [wpe, positions(z, ids)], axis=0)])
    for l in range(LAYERS):
        p = f"h.{l}"
        z.begin_layer()
        a = z.layernorm(x, H, f"{p}.ln_1")
        q, k, v = qkv_proj(z, a, f"{p}.attn", not qkv, True, [H, H, H])
        q, k, v = (z.heads(t, NH, HD) for t in (q, k, v))
        s = attention_scores(z, q, k, scale_first=qkv, mul_scale=qkv)
        s = additive_causal(z, s, q) if qkv else ex.causal_mask_where(z, s, MAXPOS, q)
        o = z.merge_heads(z.op("MatMul", [z.op("Softmax", [s], axis=-1), v]), H, a)
        x = z.op("Add", [x, z.linear_w(o, f"{p}.attn.c_proj", H, H)])
        m = z.gelu(z.linear_w(z.layernorm(x, H, f"{p}.ln_2"), f"{p}.mlp.c_fc", H, FFN["gpt2"]))
        x = z.op("Add", [x, z.linear_w(m, f"{p}.mlp.c_proj", FFN["gpt2"], H)])
    x = z.layernorm(x, H, "ln_f")
    if z.var == "gemm":  # the tied head as nn.Linear exports it on 2-D input
        y = z.op("Gemm", [z.op("Reshape", [x, z.c([-1, H])]), wte], transB=1)
        tgt = z.op("Concat", [z.dim(x, 0), z.dim(x, 1), z.c([VOCAB])], axis=0)
        z.op("Reshape", [y, tgt])
    else:
        z.op("MatMul", [x, z.op("Transpose", [wte], perm=[1, 0])])
    output(z, "logits")
    return [vi(ids, TensorProto.INT64, ["batch", "seq"])], [vi("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])]


def llama(z):
    ids = "input_ids"
    qkv = z.var == "qkv"
    emb = z.param("embed_tokens.weight", (VOCAB, H), 0.5)
    inv = 1.0 / (10000 ** (np.arange(0, HD, 2) / HD))
    ang = np.outer(np.arange(MAXPOS), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    pos = positions(z, ids)
    cos, sin = (z.op("Unsqueeze", [z.op("Gather", [z.w(f"rotary.{n}_cached", f(ang).astype(np.float32)), pos], axis=0),
                                   z.c([1])]) for n, f in (("cos", np.cos), ("sin", np.sin)))
    x = z.op("Gather", [emb, ids], axis=0)
    ss = z.op("Concat", [z.dim(ids, 1), z.dim(ids, 1)], axis=0)
    ones = z.op("ConstantOfShape", [ss], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    if qkv:  # boolean lower triangle for Where
        mask = z.op("Cast", [z.op("Trilu", [ones, z.c(0)], upper=0)], to=TensorProto.BOOL)
    else:  # additive: upper triangle * -1e9
        upper = z.op("Trilu", [ones, z.c(1)], upper=1)
        mask = z.op("Mul", [upper, z.c(-1e9, np.float32)])
    mask = z.op("Unsqueeze", [mask, z.c([0, 1])])
    rep = NH // NKV

    def repeat_kv(t):
        u = z.op("Unsqueeze", [t, z.c([2])])
        shp = z.op("Concat", [z.dim(t, 0), z.c([NKV, rep]), z.dim(t, 2), z.c([HD])], axis=0)
        tgt = z.op("Concat", [z.dim(t, 0), z.c([NH]), z.dim(t, 2), z.c([HD])], axis=0)
        return z.op("Reshape", [z.op("Expand", [u, shp]), tgt])

    for l in range(LAYERS):
        p = f"layers.{l}"
        z.begin_layer()
        a = z.rmsnorm(x, H, f"{p}.input_layernorm")
        q, k, v = qkv_proj(z, a, f"{p}.self_attn", qkv, False, [NH * HD, NKV * HD, NKV * HD])
        q, k, v = z.heads(q, NH, HD), z.heads(k, NKV, HD), z.heads(v, NKV, HD)
        q = z.op("Add", [z.op("Mul", [q, cos]), z.op("Mul", [ex.rotate_half(z, q, HD), sin])])
        k = z.op("Add", [z.op("Mul", [k, cos]), z.op("Mul", [ex.rotate_half(z, k, HD), sin])])
        s = attention_scores(z, q, repeat_kv(k), scale_first=qkv, mul_scale=False)
        if qkv:
            s = z.op("Where", [mask, s, z.c(np.finfo(np.float32).min, np.float32)])
        else:
            s = z.op("Add", [s, mask])
        o = z.merge_heads(z.op("MatMul", [z.op("Softmax", [s], axis=-1), repeat_kv(v)]), H, a)
        x = z.op("Add", [x, z.linear_w(o, f"{p}.self_attn.o_proj", H, H, bias=False)])
        m = z.rmsnorm(x, H, f"{p}.post_attention_layernorm")
        gate = z.linear_w(m, f"{p}.mlp.gate_proj", H, FFN["llama"], bias=False)
        up = z.linear_w(m, f"{p}.mlp.up_proj", H, FFN["llama"], bias=False)
        d = z.linear_w(z.op("Mul", [z.silu(gate), up]), f"{p}.mlp.down_proj", FFN["llama"], H, bias=False)
        x = z.op("Add", [x, d])
    z.linear_w(z.rmsnorm(x, H, "norm"), "lm_head", H, VOCAB, bias=False)
    output(z, "logits")
    return [vi(ids, TensorProto.INT64, ["batch", "seq"])], [vi("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])]


FAMILIES = {"mlp": mlp, "bert": bert, "gpt2": gpt2, "llama": llama}


def feeds(family, b, s):
    rng = np.random.default_rng([7, b, s, len(family)])
    if family == "mlp":
        return {"x": rng.standard_normal((b, s, H)).astype(np.float32)}
    f = {"input_ids": rng.integers(0, VOCAB, (b, s)).astype(np.int64)}
    if family == "bert":  # the last sequence is padded: its last quarter masked out
        am = np.ones((b, s), dtype=np.int64)
        am[-1, s - s // 4:] = 0
        f["attention_mask"] = am
    return f


def megatron(family, b, s, n):
    """Collective bytes of the Megatron-style hand plan for one forward on n devices.

    Per transformer layer (bert, gpt2, llama): 2 all-reduces of the activations [B,S,H] f32
    (after the attention output projection and after the FFN down projection); mlp: one per
    block (after fc2). Embedding (bert, gpt2, llama): vocab-parallel, 1 all-reduce of [B,S,H].
    LM head (gpt2, llama): column-parallel over the vocabulary, then an all-gather of the
    logits [B,S,V] f32 so that every rank holds the replicated output.
    logical = sum of the tensors' sizes; ring bytes sent per rank = 2(n-1)/n per all-reduce
    byte + (n-1)/n per all-gather byte. Zero on one device."""
    act = b * s * H * 4
    ar = 2 if family == "mlp" else 2 * LAYERS + 1
    ag = b * s * VOCAB * 4 if family in ("gpt2", "llama") else 0
    if n == 1:
        return {"all_reduce": 0, "all_gather": 0, "logical_bytes": 0, "ring_bytes_per_rank": 0}
    return {"all_reduce": ar, "all_gather": 1 if ag else 0, "logical_bytes": ar * act + ag,
            "ring_bytes_per_rank": (ar * act * 2 * (n - 1) + ag * (n - 1)) // n}


MEGATRON_FORMULA = ("logical = A*B*S*H*4 + G*B*S*V*4 with A = 2 per layer + 1 (vocab-parallel embedding) "
                    "for bert/gpt2/llama, A = 1 per block for mlp; G = 1 (all-gather of the logits after "
                    "the column-parallel LM head) for gpt2/llama, 0 otherwise; ring bytes per rank = "
                    "2(N-1)/N * A*B*S*H*4 + (N-1)/N * G*B*S*V*4; 0 at N = 1")


def shape_arg(f):
    return ",".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in f.items())


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_zoo.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    import onnxruntime as ort

    index = {"test_batch_seq": list(TEST_BS), "compile_batch_seq": list(COMPILE_BS), "megatron_formula": MEGATRON_FORMULA,
             "families": {}, "models": []}
    for fam, build in FAMILIES.items():
        index["families"][fam] = {
            "hidden": H, "heads": NH, "kv_heads": NKV if fam == "llama" else NH, "layers": LAYERS, "vocab": VOCAB,
            "intermediate": FFN[fam], "collectives_per_layer": {"all_reduce": 1 if fam == "mlp" else 2},
            "megatron": {f"{b}x{s}": {str(n): megatron(fam, b, s, n) for n in (1, 2, 4, 8)}
                         for b, s in (TEST_BS, COMPILE_BS)},
        }
        test_feeds = feeds(fam, *TEST_BS)
        base_out = None
        for var in VARIANTS[fam]:
            z = Z(fam, var)
            inputs, outputs = build(z)
            model = finish(z.model(inputs, outputs, f"{fam}__{var}"), var)
            name = f"{fam}__{var}"
            path = os.path.join(out, f"{name}.onnx")
            onnx.save(model, path)
            ref = os.path.join(out, name)
            os.makedirs(ref, exist_ok=True)
            for k, v in test_feeds.items():
                np.save(os.path.join(ref, f"input_{k}.npy"), v)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = sess.run(None, test_feeds)
            for o, val in zip(sess.get_outputs(), got):
                np.save(os.path.join(ref, f"ort_output_{o.name}.npy"), val)
            base_out = got[0] if var == "base" else base_out
            diff = float(np.abs(got[0] - base_out).max())
            same = var not in OWN_ARITHMETIC and not (var == "decomposed" and fam != "llama")
            if same and diff > 1e-4:
                sys.exit(f"{name}: differs from {fam}__base by {diff:.3e} (the idiom is not equivalent)")
            params = sum(numpy_bytes(i) for i in model.graph.initializer)
            index["models"].append({
                "family": fam, "variant": var, "file": f"{name}.onnx", "dir": name,
                "reference": "same as base (max abs diff %.2e)" % diff if same else "own (max abs diff to base %.2e)" % diff,
                "test_shapes": shape_arg(test_feeds), "compile_shapes": shape_arg(feeds(fam, *COMPILE_BS)),
                "param_bytes": params, "nodes": len(model.graph.node),
            })
            print(f"{path}: {len(model.graph.node)} nodes, {params} parameter bytes, vs base {diff:.2e}")
    with open(os.path.join(out, "zoo.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


def numpy_bytes(init):
    return numpy_helper.to_array(init).nbytes


if __name__ == "__main__":
    main()
