"""Export idioms of the synthetic export zoo (scripts/gen_zoo.py): a graph builder whose
linears, norms, activations and post-passes write one model in many equivalent ways.

Every parameter value is a pure function of (family, parameter name), so the variants of one
family share their weights whatever order they create them in.
"""
import os
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models"))
from generate import G  # noqa: E402  (the examples' graph builder: op, c, w, dim, heads, merge_heads, model)

SEED = 20261202


def value(family, name, shape, scale=None, kind="normal"):
    """The deterministic value of parameter `name` of `family`."""
    rng = np.random.default_rng([SEED, zlib.crc32(f"{family}/{name}".encode())])
    if kind == "norm_scale":
        return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def quantise(w, zero_point):
    """Per-column (last axis) quantisation of w [in, out]: (q, scale, zp or None, dequantised)."""
    if not zero_point:
        scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return q, scale, None, (q.astype(np.float32) * scale).astype(np.float32)
    lo, hi = np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)
    scale = ((hi - lo) / 255.0).astype(np.float32)
    zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    q = np.clip(np.round(w / scale) + zp, 0, 255).astype(np.uint8)
    deq = ((q.astype(np.float32) - zp.astype(np.float32)) * scale).astype(np.float32)
    return q, scale, zp, deq


class Z(G):
    """Graph builder for one (family, variant): idioms chosen by the variant."""

    def __init__(self, family, variant):
        super().__init__()
        self.fam, self.var, self.nlin, self.nnorm = family, variant, 0, 0

    def begin_layer(self):
        """Restarts the idiom cycles, so that every repeated layer is written alike."""
        self.nlin, self.nnorm = 0, 0

    # parameters -------------------------------------------------------------------------
    def param(self, name, shape, scale=None, kind="normal"):
        return self.w(name, value(self.fam, name, shape, scale, kind))

    def weight_node(self, name, w):
        """A MatMul weight [in, out]: a float initializer, or its int8 / uint8+zp dequantisation."""
        if self.var not in ("int8", "int8zp"):
            return self.w(name, w)
        q, scale, zp, _ = quantise(w, self.var == "int8zp")
        qf = self.op("Cast", [self.w(name + ".q", q)], to=TensorProto.FLOAT)
        if zp is not None:
            zf = self.op("Cast", [self.w(name + ".zero_point", zp)], to=TensorProto.FLOAT)
            qf = self.op("Sub", [qf, zf])
        return self.op("Mul", [qf, self.w(name + ".scale", scale)])

    # linears ----------------------------------------------------------------------------
    def linear_w(self, x, name, din, dout, bias=True, scale=None):
        """nn.Linear `name` (din -> dout), weights from the family's values."""
        w = value(self.fam, f"{name}.weight", (din, dout), scale)
        b = value(self.fam, f"{name}.bias", (dout,), 0.1) if bias else None
        return self.linear_arr(x, name, w, b)

    def linear_arr(self, x, name, w, b):
        """x @ w (+ b) for w [in, out] in this variant's idiom; x is [B, S, in]."""
        form = self.nlin % 3
        self.nlin += 1
        if self.var == "gemm":
            din, dout = w.shape
            if form == 1 and b is None:
                form = 2
            if form == 0:  # 2-D Gemm(transB=1) on the flattened input, reshaped back
                x2 = self.op("Reshape", [x, self.c([-1, din])])
                ins = [x2, self.w(f"{name}.weight", np.ascontiguousarray(w.T))]
                if b is not None:
                    ins.append(self.w(f"{name}.bias", b))
                y = self.op("Gemm", ins, alpha=1.0, beta=1.0, transB=1)
                tgt = self.op("Concat", [self.dim(x, 0), self.dim(x, 1), self.c([dout])], axis=0)
                return self.op("Reshape", [y, tgt])
            if form == 1:  # bias first: Add(b, MatMul(x, W))
                return self.op("Add", [self.w(f"{name}.bias", b), self.op("MatMul", [x, self.w(f"{name}.weight", w)])])
            wt = self.op("Transpose", [self.w(f"{name}.weight", np.ascontiguousarray(w.T))], perm=[1, 0])
            y = self.op("MatMul", [x, wt])
        else:
            y = self.op("MatMul", [x, self.weight_node(f"{name}.weight", w)])
        return self.op("Add", [y, self.w(f"{name}.bias", b)]) if b is not None else y

    # norms and activations ----------------------------------------------------------------
    def layernorm(self, x, h, prefix):
        s = self.param(f"{prefix}.weight", (h,), kind="norm_scale")
        b = self.param(f"{prefix}.bias", (h,), 0.1)
        if self.var != "decomposed":
            return self.op("LayerNormalization", [x, s, b], axis=-1, epsilon=1e-5)
        mean = self.op("ReduceMean", [x, self.c([-1])], keepdims=1)
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Pow", [d, self.c(2.0, np.float32)]), self.c([-1])], keepdims=1)
        sd = self.op("Sqrt", [self.op("Add", [var, self.c(1e-5, np.float32)])])
        return self.op("Add", [self.op("Mul", [self.op("Div", [d, sd]), s]), b])

    def rmsnorm(self, x, h, prefix):
        """x * rsqrt(mean(x^2) + eps) * w; the decomposed variant cycles through three forms."""
        w = self.param(f"{prefix}.weight", (h,), kind="norm_scale")
        form = self.nnorm % 3 if self.var == "decomposed" else 2
        self.nnorm += 1
        sq = self.op("Mul", [x, x]) if form == 0 else self.op("Pow", [x, self.c(2.0, np.float32)])
        m = self.op("ReduceMean", [sq, self.c([-1])], keepdims=1)
        a = self.op("Add", [m, self.c(1e-6, np.float32)])
        if form == 0:  # Sqrt + Div
            n = self.op("Div", [x, self.op("Sqrt", [a])])
            return self.op("Mul", [n, w])
        r = self.op("Reciprocal", [self.op("Sqrt", [a])])
        if form == 1:  # weight first: (w * x) * r
            return self.op("Mul", [self.op("Mul", [w, x]), r])
        return self.op("Mul", [w, self.op("Mul", [x, r])])  # Sqrt + Reciprocal + Mul (exporters' form)

    def gelu(self, x):
        if self.var != "decomposed":
            return self.gelu_erf(x)
        # tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = self.op("Pow", [x, self.c(3.0, np.float32)])
        inner = self.op("Add", [x, self.op("Mul", [x3, self.c(0.044715, np.float32)])])
        t = self.op("Tanh", [self.op("Mul", [inner, self.c(np.sqrt(2.0 / np.pi), np.float32)])])
        return self.op("Mul", [self.op("Mul", [x, self.c(0.5, np.float32)]), self.op("Add", [t, self.c(1.0, np.float32)])])

    def silu(self, x):
        if self.var != "decomposed":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        den = self.op("Add", [self.op("Exp", [self.op("Neg", [x])]), self.c(1.0, np.float32)])
        return self.op("Div", [x, den])


# post-passes on a finished model --------------------------------------------------------
def swap_commutative(model):
    """Swap the two operands of every Add and Mul."""
    for n in model.graph.node:
        if n.op_type in ("Add", "Mul") and len(n.input) == 2:
            n.input[0], n.input[1] = n.input[1], n.input[0]


def reciprocal_constants(model):
    """Div(x, c) by a float initializer c -> Mul(x, 1/c), the reciprocal precomputed."""
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        c = inits.get(n.input[1]) if n.op_type == "Div" else None
        if c is None or c.data_type != TensorProto.FLOAT:
            continue
        r = (1.0 / numpy_helper.to_array(c)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(r, f"{c.name}_recip_{n.name}"))
        n.op_type, n.input[1] = "Mul", f"{c.name}_recip_{n.name}"


IDENTITY_AFTER = {"MatMul", "Add", "Mul", "Softmax", "LayerNormalization", "Reshape", "Transpose", "Gather",
                  "Div", "Gemm", "Split", "Sigmoid", "Erf", "Concat"}


def identities_and_renames(model):
    """Identity after every output of the ops above; every node, initializer and inner tensor renamed."""
    g = model.graph
    keep = {i.name for i in g.input} | {o.name for o in g.output}
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type not in IDENTITY_AFTER:
            continue
        for i, out in enumerate(n.output):
            if out in keep:
                continue
            n.output[i] = out + "__pre_identity"
            nodes.append(helper.make_node("Identity", [n.output[i]], [out], name=f"{n.name}_id{i}"))
    names = {}

    def rn(t):
        if t == "" or t in keep:
            return t
        return names.setdefault(t, f"t{len(names):04d}")

    for i in g.initializer:
        i.name = rn(i.name)
    for k, n in enumerate(nodes):
        n.name = f"node{k:04d}"
        for j, t in enumerate(n.input):
            n.input[j] = rn(t)
        for j, t in enumerate(n.output):
            n.output[j] = rn(t)
    del g.node[:]
    g.node.extend(nodes)


def finish(model, variant):
    """Applies the post-pass of `variant` (if it has one) and checks the model."""
    {"swapped": swap_commutative, "recip": reciprocal_constants, "identity": identities_and_renames}.get(
        variant, lambda m: None)(model)
    used = {t for n in model.graph.node for t in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model
