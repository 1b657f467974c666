#!/usr/bin/env python3
"""Generate the bundled example models (random weights, fixed seed).

Usage: python3 examples/models/generate.py [OUT_DIR]   (default: examples/models)

Writes, in the shapes PyTorch's ONNX exporter produces (dynamic batch/sequence dims and the
Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains that come with them):
  mlp.onnx          Linear -> GELU(erf) -> Linear, input x[batch, 64]
  sdpa_2l.onnx      2 pre-LN decoder blocks whose attention is the ONNX Attention op (opset
                    23, 4-D, is_causal, grouped-query: 8 query / 4 key-value heads), as
                    torch.onnx exports scaled_dot_product_attention at opset 23
  mlp_gemm.onnx     the classifier head PyTorch exports for 2-D inputs: Gemm(transB=1) -> Relu
                    -> Gemm(transB=1) -> Relu -> Gemm(transB=1), input x[batch, 64]
  gpt2_1l.onnx      GPT-2-style decoder, 1 layer  (LayerNorm, fused QKV MatMul + Split, causal
  gpt2_4l.onnx      GPT-2-style decoder, 4 layers  mask, GELU via Erf, residuals, tied LM head)
  llama_1l.onnx     LLaMA-style decoder, 1 layer  (RMSNorm decomposed as exporters emit it,
  llama_4l.onnx     LLaMA-style decoder, 4 layers  SwiGLU, rotary embedding, grouped-query attn)
and for each model NAME a folder NAME/ with sample inputs (input_*.npy) and onnxruntime's
outputs on them (ort_output_*.npy), used by the tests as an independent reference.
Needs: onnx, numpy; onnxruntime for the reference outputs.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
rng = np.random.default_rng(20261125)


class G:
    """Tiny graph builder: unique names, initializers, nodes."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def w(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def rand(self, name, shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return self.w(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def c(self, arr, dtype=np.int64):
        return self.w(self.name("const"), np.asarray(arr, dtype=dtype))

    def op(self, op_type, inputs, n_out=1, name=None, **attrs):
        name = name or self.name(op_type)
        outs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs if n_out > 1 else outs[0]

    # PyTorch-export idioms -------------------------------------------------------------
    def dim(self, x, i):
        """Shape(x)[i] as a 1-element int64 tensor (Shape -> Gather -> Unsqueeze)."""
        s = self.op("Shape", [x])
        g = self.op("Gather", [s, self.c(i)], axis=0)
        return self.op("Unsqueeze", [g, self.c([0])])

    def linear(self, x, w, b=None):
        y = self.op("MatMul", [x, w])
        return self.op("Add", [y, b]) if b else y

    def gelu_erf(self, x):
        d = self.op("Div", [x, self.c(np.sqrt(2.0), np.float32)])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.c(1.0, np.float32)])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.c(0.5, np.float32)])

    def layernorm(self, x, h, prefix):
        s = self.w(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(h)).astype(np.float32))
        b = self.w(f"{prefix}.bias", (0.1 * rng.standard_normal(h)).astype(np.float32))
        return self.op("LayerNormalization", [x, s, b], axis=-1, epsilon=1e-5)

    def rmsnorm(self, x, h, prefix):
        """LLaMA RMSNorm as exporters decompose it: x * rsqrt(mean(x^2) + eps) * w."""
        w = self.w(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(h)).astype(np.float32))
        p = self.op("Pow", [x, self.c(2.0, np.float32)])
        m = self.op("ReduceMean", [p, self.c([-1])], keepdims=1)
        a = self.op("Add", [m, self.c(1e-6, np.float32)])
        r = self.op("Reciprocal", [self.op("Sqrt", [a])])
        return self.op("Mul", [w, self.op("Mul", [x, r])])

    def heads(self, x, n_heads, head_dim):
        """[B,S,nh*hd] -> [B,nh,S,hd] with a dynamic reshape target."""
        tgt = self.op("Concat", [self.dim(x, 0), self.dim(x, 1), self.c([n_heads]), self.c([head_dim])], axis=0)
        r = self.op("Reshape", [x, tgt])
        return self.op("Transpose", [r], perm=[0, 2, 1, 3])

    def head_proj(self, x, weight, hidden, n_heads, head_dim):
        """x @ the new weight `weight` [hidden, n_heads*head_dim], split into heads."""
        return self.heads(self.linear(x, self.rand(weight, (hidden, n_heads * head_dim))), n_heads, head_dim)

    def merge_heads(self, x, hidden, like):
        t = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        tgt = self.op("Concat", [self.dim(like, 0), self.dim(like, 1), self.c([hidden])], axis=0)
        return self.op("Reshape", [t, tgt])

    def model(self, inputs, outputs, name, opset=OPSET):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tessera-examples")
        m.ir_version = 8 if opset <= 18 else 10
        onnx.checker.check_model(m)
        return m


def mlp():
    g = G()
    h, f = 64, 256
    x = "x"
    y = g.linear(x, g.rand("fc1.weight", (h, f)), g.rand("fc1.bias", (f,), 0.1))
    y = g.gelu_erf(y)
    y = g.linear(y, g.rand("fc2.weight", (f, h)), g.rand("fc2.bias", (h,), 0.1))
    g.nodes[-1].output[0] = "y"
    inp = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", h])]
    return g.model(inp, out, "mlp"), {"x": rng.standard_normal((4, h)).astype(np.float32)}


def mlp_gemm():
    g = G()
    dims = [64, 256, 128, 10]
    x = "x"
    for i, (din, dout) in enumerate(zip(dims, dims[1:])):
        # nn.Linear on a 2-D input exports as Gemm(x, weight[out, in], bias, transB=1).
        w = g.w(f"fc{i}.weight", (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(np.float32))
        b = g.rand(f"fc{i}.bias", (dout,), 0.1)
        x = g.op("Gemm", [x, w, b], alpha=1.0, beta=1.0, transB=1)
        if i + 2 < len(dims):
            x = g.op("Relu", [x])
    g.nodes[-1].output[0] = "logits"
    inp = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", dims[-1]])]
    return g.model(inp, out, "mlp_gemm"), {"x": rng.standard_normal((8, dims[0])).astype(np.float32)}


def sdpa(layers):
    g = G()
    h, nh, nkv, ffn = 64, 8, 4, 128
    hd = h // nh
    qkv_heads = (("q", nh), ("k", nkv), ("v", nkv))
    x = "x"
    for l in range(layers):
        p = f"layers.{l}"
        a = g.layernorm(x, h, f"{p}.ln_1")
        q, k, v = [g.head_proj(a, f"{p}.{n}.weight", h, heads, hd) for n, heads in qkv_heads]
        o = g.op("Attention", [q, k, v], is_causal=1)
        o = g.linear(g.merge_heads(o, h, a), g.rand(f"{p}.o.weight", (h, h)))
        x = g.op("Add", [x, o])
        m = g.layernorm(x, h, f"{p}.ln_2")
        m = g.gelu_erf(g.linear(m, g.rand(f"{p}.fc1.weight", (h, ffn)), g.rand(f"{p}.fc1.bias", (ffn,), 0.1)))
        m = g.linear(m, g.rand(f"{p}.fc2.weight", (ffn, h)), g.rand(f"{p}.fc2.bias", (h,), 0.1))
        x = g.op("Add", [x, m])
    g.nodes[-1].output[0] = "y"
    inp = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", h])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", h])]
    feeds = {"x": rng.standard_normal((2, 16, h)).astype(np.float32)}
    return g.model(inp, out, f"sdpa_{layers}l", opset=23), feeds


def causal_mask_where(g, scores, max_pos, q):
    """GPT-2's Slice of a lower-triangular bias buffer, then Where(mask, scores, min)."""
    bias = g.w(g.name("attn.bias"), np.tril(np.ones((max_pos, max_pos), dtype=bool))[None, None])
    s = g.dim(q, 2)
    mask = g.op("Slice", [bias, g.c([0, 0]), g.op("Concat", [s, s], axis=0), g.c([2, 3])])
    return g.op("Where", [mask, scores, g.c(np.finfo(np.float32).min, np.float32)])


def gpt2(layers):
    g = G()
    h, nh, vocab, max_pos = 64, 8, 512, 64
    hd = h // nh
    ids = "input_ids"
    wte = g.rand("wte", (vocab, h), 0.5)
    wpe = g.rand("wpe", (max_pos, h), 0.1)
    seq = g.op("Squeeze", [g.dim(ids, 1), g.c([0])])
    pos = g.op("Unsqueeze", [g.op("Range", [g.c(0), seq, g.c(1)]), g.c([0])])
    x = g.op("Add", [g.op("Gather", [wte, ids], axis=0), g.op("Gather", [wpe, pos], axis=0)])
    for l in range(layers):
        p = f"h.{l}"
        a = g.layernorm(x, h, f"{p}.ln_1")
        qkv = g.linear(a, g.rand(f"{p}.attn.c_attn.weight", (h, 3 * h)), g.rand(f"{p}.attn.c_attn.bias", (3 * h,), 0.1))
        q, k, v = g.op("Split", [qkv, g.c([h, h, h])], n_out=3, axis=2)
        q, k, v = g.heads(q, nh, hd), g.heads(k, nh, hd), g.heads(v, nh, hd)
        kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
        s = g.op("Div", [g.op("MatMul", [q, kt]), g.c(np.sqrt(hd), np.float32)])
        s = causal_mask_where(g, s, max_pos, q)
        attn = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        o = g.merge_heads(attn, h, a)
        o = g.linear(o, g.rand(f"{p}.attn.c_proj.weight", (h, h)), g.rand(f"{p}.attn.c_proj.bias", (h,), 0.1))
        x = g.op("Add", [x, o])
        m = g.layernorm(x, h, f"{p}.ln_2")
        m = g.linear(m, g.rand(f"{p}.mlp.c_fc.weight", (h, 4 * h)), g.rand(f"{p}.mlp.c_fc.bias", (4 * h,), 0.1))
        m = g.gelu_erf(m)
        m = g.linear(m, g.rand(f"{p}.mlp.c_proj.weight", (4 * h, h)), g.rand(f"{p}.mlp.c_proj.bias", (h,), 0.1))
        x = g.op("Add", [x, m])
    x = g.layernorm(x, h, "ln_f")
    logits = g.op("MatMul", [x, g.op("Transpose", [wte], perm=[1, 0])])
    g.nodes[-1].output[0] = "logits"
    inp = [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"])]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    feeds = {ids: rng.integers(0, vocab, (2, 16)).astype(np.int64)}
    return g.model(inp, out, f"gpt2_{layers}l"), feeds


def rotate_half(g, x, hd):
    x1 = g.op("Slice", [x, g.c([0]), g.c([hd // 2]), g.c([-1])])
    x2 = g.op("Slice", [x, g.c([hd // 2]), g.c([hd]), g.c([-1])])
    return g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)


def llama(layers):
    g = G()
    h, nh, nkv, vocab, max_pos, ffn = 64, 8, 4, 512, 64, 176
    hd = h // nh
    qkv_heads = (("q", nh), ("k", nkv), ("v", nkv))
    ids = "input_ids"
    emb = g.rand("embed_tokens.weight", (vocab, h), 0.5)
    inv = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(np.arange(max_pos), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    cos_c = g.w("rotary.cos_cached", np.cos(ang).astype(np.float32))
    sin_c = g.w("rotary.sin_cached", np.sin(ang).astype(np.float32))
    seq = g.op("Squeeze", [g.dim(ids, 1), g.c([0])])
    pos = g.op("Unsqueeze", [g.op("Range", [g.c(0), seq, g.c(1)]), g.c([0])])
    cos = g.op("Unsqueeze", [g.op("Gather", [cos_c, pos], axis=0), g.c([1])])  # [1,1,S,hd]
    sin = g.op("Unsqueeze", [g.op("Gather", [sin_c, pos], axis=0), g.c([1])])
    x = g.op("Gather", [emb, ids], axis=0)
    # additive causal mask [1,1,S,S] from Trilu on a ConstantOfShape
    ss = g.op("Concat", [g.dim(ids, 1), g.dim(ids, 1)], axis=0)
    ones = g.op("ConstantOfShape", [ss], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    upper = g.op("Trilu", [ones, g.c(1)], upper=1)
    mask = g.op("Unsqueeze", [g.op("Mul", [upper, g.c(-1e9, np.float32)]), g.c([0, 1])])
    for l in range(layers):
        p = f"layers.{l}"
        a = g.rmsnorm(x, h, f"{p}.input_layernorm")
        q, k, v = [g.head_proj(a, f"{p}.self_attn.{n}_proj.weight", h, heads, hd) for n, heads in qkv_heads]
        q = g.op("Add", [g.op("Mul", [q, cos]), g.op("Mul", [rotate_half(g, q, hd), sin])])
        k = g.op("Add", [g.op("Mul", [k, cos]), g.op("Mul", [rotate_half(g, k, hd), sin])])
        rep = nh // nkv

        def repeat_kv(t):
            # [B,kv,S,hd] -> [B,kv,1,S,hd] -> expand [B,kv,rep,S,hd] -> [B,nh,S,hd]
            u = g.op("Unsqueeze", [t, g.c([2])])
            shp = g.op("Concat", [g.dim(t, 0), g.c([nkv, rep]), g.dim(t, 2), g.c([hd])], axis=0)
            e = g.op("Expand", [u, shp])
            tgt = g.op("Concat", [g.dim(t, 0), g.c([nh]), g.dim(t, 2), g.c([hd])], axis=0)
            return g.op("Reshape", [e, tgt])

        k, v = repeat_kv(k), repeat_kv(v)
        s = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        s = g.op("Add", [g.op("Mul", [s, g.c(1.0 / np.sqrt(hd), np.float32)]), mask])
        attn = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
        o = g.linear(g.merge_heads(attn, h, a), g.rand(f"{p}.self_attn.o_proj.weight", (h, h)))
        x = g.op("Add", [x, o])
        m = g.rmsnorm(x, h, f"{p}.post_attention_layernorm")
        gate = g.linear(m, g.rand(f"{p}.mlp.gate_proj.weight", (h, ffn)))
        up = g.linear(m, g.rand(f"{p}.mlp.up_proj.weight", (h, ffn)))
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        d = g.linear(g.op("Mul", [act, up]), g.rand(f"{p}.mlp.down_proj.weight", (ffn, h)))
        x = g.op("Add", [x, d])
    x = g.rmsnorm(x, h, "norm")
    logits = g.linear(x, g.rand("lm_head.weight", (h, vocab)))
    g.nodes[-1].output[0] = "logits"
    inp = [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"])]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    feeds = {ids: rng.integers(0, vocab, (2, 16)).astype(np.int64)}
    return g.model(inp, out, f"llama_{layers}l"), feeds


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)
    models = {"mlp": mlp(), "gpt2_1l": gpt2(1), "gpt2_4l": gpt2(4), "llama_1l": llama(1), "llama_4l": llama(4),
              "mlp_gemm": mlp_gemm(), "sdpa_2l": sdpa(2)}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    for name, (model, feeds) in models.items():
        path = os.path.join(out_dir, f"{name}.onnx")
        onnx.save(model, path)
        ref_dir = os.path.join(out_dir, name)
        os.makedirs(ref_dir, exist_ok=True)
        for k, v in feeds.items():
            np.save(os.path.join(ref_dir, f"input_{k}.npy"), v)
        msg = ""
        if ort is not None:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            for o, val in zip(sess.get_outputs(), sess.run(None, feeds)):
                np.save(os.path.join(ref_dir, f"ort_output_{o.name}.npy"), val)
            msg = " + onnxruntime reference"
        print(f"{path}: {len(model.graph.node)} nodes, {os.path.getsize(path)} bytes{msg}")


if __name__ == "__main__":
    main()
