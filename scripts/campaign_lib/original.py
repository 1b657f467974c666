"""The cases of issue 13's original campaign ("Why"), one per listed finding, re-created
from the description."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from .common import (Case, Spec, const, f32, folded, model, outputs_contain, outside_marker,
                     unary, vi)

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def range_float_overflow(ctx):
    m = folded([helper.make_node("Range", ["s", "l", "d"], ["y"])],
               [const("s", np.float32(0)), const("l", np.float32(3e38)), const("d", np.float32(1e-38))])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("range", "y"))


def attention_seq0(ctx):
    path = ctx.copy_example("gpt2_1l")
    ids = np.zeros((1, 0), dtype=np.int64)
    return Spec(steps=[ctx.compile_cmd(path, shapes=("input_ids=1x0",)),
                       ctx.run_cmd(inputs={"input_ids": ctx.npy("ids", ids)})],
                expect="either", names=("input_ids", "0"), ort=(path, {"input_ids": ids}),
                outdir=ctx.p("out"), outputs=("logits",))


def add_const_model(values):
    """y = x + c with a small constant c in float_data (inline in the plan)."""
    return model([helper.make_node("Add", ["x", "c"], ["y"])], [vi("x", TensorProto.FLOAT, [len(values)])],
                 [vi("y", TensorProto.FLOAT, None)], [helper.make_tensor("c", TensorProto.FLOAT, [len(values)], list(values))])


def inline_plan(ctx, values=(1.0, 2.0, 3.0, 4.0)):
    """Compiles y = x + c; returns (plan dict, the inline weight entry)."""
    path = ctx.save(add_const_model(values))
    r = subprocess.run(ctx.compile_cmd(path, devices=1), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plan = json.loads(ctx.p("plan.json").read_text())
    w = next(w for w in plan["graph"]["weights"].values() if w["data"]["kind"] == "inline")
    return plan, w


def plan_inline_short(ctx):
    plan, w = inline_plan(ctx)
    t = w["data"]["tensor"]
    key = next(k for k in t if k not in ("shape", "dtype"))
    data = t[key]
    if isinstance(data, dict):  # {"F32": [...]}
        k2 = next(iter(data))
        data[k2] = data[k2][:2]
    else:
        t[key] = data[:2]
    ctx.write_plan(plan)
    x = ctx.npy("x", np.ones(4, np.float32))
    return Spec(steps=[ctx.run_cmd(inputs={"x": x})], expect="refuse", names=("c", "inline", "element"))


def repeat_u64(ctx):
    _, plan, _ = ctx.compiled_plan()
    x = ctx.npy("x", f32(2, 64))
    return Spec(steps=[ctx.run_cmd(inputs={"x": x}, extra=["--repeat", str(2**64 - 1)])],
                expect="refuse", names=("repeat",))


def empty_graph_initializer_out(ctx):
    c = np.arange(6, dtype=np.float32).reshape(2, 3)
    m = model([], [], [vi("c", TensorProto.FLOAT, [2, 3])], [const("c", c)])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m), devices=1), ctx.run_cmd()], expect="either",
                names=("c", "output"), ort=(ctx.p("m.onnx"), {}), outdir=ctx.p("out"), outputs=("c",))


def constant_of_shape_2_40(ctx):
    m = folded([helper.make_node("ConstantOfShape", ["s"], ["y"],
                                 value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
               [const("s", np.array([2**40], np.int64))])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("y", "constantofshape", "bytes"))


def range_1e12(ctx):
    m = folded([helper.make_node("Range", ["s", "l", "d"], ["y"])],
               [const("s", np.float32(0)), const("l", np.float32(1e12)), const("d", np.float32(1))])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("range", "y"))


def split_2_31(ctx):
    m = model([helper.make_node("Split", ["x"], ["y"], axis=0, num_outputs=2**31)],
              [vi("x", TensorProto.FLOAT, [4])], [vi("y", TensorProto.FLOAT, None)])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("split", "num_outputs"))


def shape_huge(ctx):
    path = ctx.copy_example("gpt2_1l")
    return Spec(steps=[ctx.compile_cmd(path, shapes=("input_ids=1x99999999999",))],
                expect="refuse", names=("input_ids", "99999999999"))


def devices_2_32(ctx):
    path = ctx.copy_example("mlp")
    return Spec(steps=[ctx.compile_cmd(path, devices=4294967296, shapes=("x=2x64",))],
                expect="refuse", names=("devices", "4294967296"))


def mesh_1x1e6(ctx):
    path = ctx.copy_example("mlp")
    return Spec(steps=[ctx.compile_cmd(path, devices=None, shapes=("x=2x64",), extra=["--mesh", "1x1000000"])],
                expect="refuse", names=("mesh", "1000000"))


def plan_expand_2_53(ctx):
    m = model([helper.make_node("Expand", ["x", "s"], ["y"])], [vi("x", TensorProto.FLOAT, [1, 4])],
              [vi("y", TensorProto.FLOAT, None)], [const("s", np.array([3, 4], np.int64))])
    path = ctx.save(m)
    r = subprocess.run(ctx.compile_cmd(path, devices=1), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = ctx.p("plan.json").read_text()
    plan = json.loads(text)
    hits = 0

    def edit(o):
        nonlocal hits
        if isinstance(o, dict):
            if o.get("op") == "expand":
                for k, v in o.items():
                    if isinstance(v, list) and v == [3, 4]:
                        o[k] = [2**53, 4]
                        hits += 1
            for v in o.values():
                edit(v)
        elif isinstance(o, list):
            for v in o:
                edit(v)
    edit(plan)
    assert hits, "no expand op in the plan"
    ctx.write_plan(plan)
    x = ctx.npy("x", np.ones((1, 4), np.float32))
    return Spec(steps=[ctx.run_cmd(inputs={"x": x})], expect="refuse", names=("expand", "9007199254740992", "y"))


def external_model(ctx, location, name="m.onnx", n=4, offset=None):
    """y = x + w where w (float32[n]) lives in external data at LOCATION."""
    w = const("w", np.zeros(n, np.float32))
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = [("location", location), ("length", str(4 * n))] + ([("offset", str(offset))] if offset is not None else [])
    for k, v in entries:
        e = w.external_data.add()
        e.key, e.value = k, v
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", TensorProto.FLOAT, [n])],
              [vi("y", TensorProto.FLOAT, None)], [w])
    return ctx.save(m, name)


def fifo_external(ctx):
    os.mkfifo(ctx.p("w.bin"))
    path = external_model(ctx, "w.bin")
    return Spec(steps=[ctx.compile_cmd(path, devices=1)], expect="refuse", names=("w.bin",), timeout=20)


def fifo_input(ctx):
    _, plan, _ = ctx.compiled_plan()
    os.mkfifo(ctx.p("x.npy"))
    return Spec(steps=[ctx.run_cmd(inputs={"x": ctx.p("x.npy")})], expect="refuse", names=("x.npy",))


def dims_2_62_shape(ctx):
    path = ctx.copy_example("mlp")
    return Spec(steps=[ctx.compile_cmd(path, shapes=(f"x={2**62}x64",))], expect="refuse",
                names=("x", str(2**62)))


def dims_2_62_model(ctx):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [2**62, 4])],
              [vi("y", TensorProto.FLOAT, None)])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("x", str(2**62)))


def causal_attention_model(is_causal=1):
    q = vi("q", TensorProto.FLOAT, [1, 2, 4, 8])
    n = helper.make_node("Attention", ["q", "q", "q"], ["y"], is_causal=is_causal)
    return model([n], [q], [vi("y", TensorProto.FLOAT, None)], opset=23)


def corrupt_attribute(ctx):
    """The Attention node's is_causal attribute (NodeProto field 5, a length-delimited
    AttributeProto) gets a wrong wire type (varint): a strict protobuf parser refuses the
    bytes; a lax one drops the attribute and runs a non-causal attention."""
    m = causal_attention_model()
    data = bytearray(m.SerializeToString())
    attr = m.graph.node[0].attribute[0].SerializeToString()
    i = data.find(bytes([0x2A, len(attr)]) + attr)
    assert i >= 0
    data[i] = 0x28  # field 5, wire type 0
    path = ctx.p("m.onnx")
    path.write_bytes(bytes(data))
    q = f32(1, 2, 4, 8)
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd(inputs={"q": ctx.npy("q", q)})],
                expect="either", names=("m.onnx", "protobuf", "attention"), ort=(path, {"q": q}),
                outdir=ctx.p("out"), outputs=("y",))


def unknown_field_attribute(ctx):
    """The is_causal attribute moved to NodeProto field 15, which no ONNX version defines:
    every protobuf parser skips an unknown field, so onnxruntime and Tessera both run a
    non-causal attention; the outputs must agree."""
    m = causal_attention_model()
    data = bytearray(m.SerializeToString())
    attr = m.graph.node[0].attribute[0].SerializeToString()
    i = data.find(bytes([0x2A, len(attr)]) + attr)
    assert i >= 0
    data[i] = 0x7A  # field 15, wire type 2
    path = ctx.p("m.onnx")
    path.write_bytes(bytes(data))
    q = f32(1, 2, 4, 8)
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd(inputs={"q": ctx.npy("q", q)})],
                expect="either", names=("m.onnx",), ort=(path, {"q": q}),
                outdir=ctx.p("out"), outputs=("y",))


def erf_gelu_edges(ctx):
    x = np.array([-1e6, -1e5, -1e4, -20, -6, -4, -3.9, 0, 3.9, 6, 1e4, 1e5], np.float32)
    n = [helper.make_node("Erf", ["x"], ["e"]),
         helper.make_node("Div", ["x", "r2"], ["xs"]), helper.make_node("Erf", ["xs"], ["ex"]),
         helper.make_node("Add", ["ex", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["xp"]),
         helper.make_node("Mul", ["xp", "half"], ["g"])]
    m = model(n, [vi("x", TensorProto.FLOAT, [12])],
              [vi("e", TensorProto.FLOAT, None), vi("g", TensorProto.FLOAT, None)],
              [const("r2", np.float32(np.sqrt(2))), const("one", np.float32(1)), const("half", np.float32(0.5))])
    return ctx.onnx_case(m, {"x": x}, devices=1, expect="run")


def range_i64_overflow(ctx):
    s, l, d = I64_MIN + 1, I64_MAX, 2**62
    want = np.array([s + i * d for i in range(4)], np.int64)
    m = folded([helper.make_node("Range", ["s", "l", "d"], ["y"])],
               [const("s", np.int64(s)), const("l", np.int64(l)), const("d", np.int64(d))],
               out_type=TensorProto.INT64)
    return Spec(steps=[ctx.compile_cmd(ctx.save(m), devices=1), ctx.run_cmd()], expect="run",
                reference={"y": want}, outdir=ctx.p("out"), outputs=("y",))


def slice_max_step(ctx):
    m = model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
              [vi("x", TensorProto.FLOAT, [10])], [vi("y", TensorProto.FLOAT, None)],
              [const("st", np.array([0], np.int64)), const("en", np.array([10], np.int64)),
               const("ax", np.array([0], np.int64)), const("sp", np.array([I64_MAX], np.int64))])
    return ctx.onnx_case(m, {"x": f32(10)}, devices=1, expect="run")


def wrong_typed_attribute(ctx):
    m = unary("Softmax", [2, 3])
    m.graph.node[0].attribute.append(helper.make_attribute("axis", 1.5))
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("softmax", "axis"))


def unknown_attribute(ctx):
    m = unary("Relu", [2, 3])
    m.graph.node[0].attribute.append(helper.make_attribute("alpha", 0.5))
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("relu", "alpha"))


def reduce_mean_axes_opset17(ctx):
    m = model([helper.make_node("ReduceMean", ["x", "a"], ["y"])], [vi("x", TensorProto.FLOAT, [2, 3])],
              [vi("y", TensorProto.FLOAT, None)], [const("a", np.array([1], np.int64))], opset=17)
    return Spec(steps=[ctx.compile_cmd(ctx.save(m))], expect="refuse", names=("reducemean",))


def nonfinite_constants(ctx):
    c = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    m = model([helper.make_node("Add", ["x", "c"], ["y"]), helper.make_node("Mul", ["x", "c"], ["z"])],
              [vi("x", TensorProto.FLOAT, [4])], [vi("y", TensorProto.FLOAT, None), vi("z", TensorProto.FLOAT, None)],
              [const("c", c)])
    return ctx.onnx_case(m, {"x": np.array([1, 2, 0, -1], np.float32)}, expect="run")


def escape_case(ctx, location_of):
    """External data at a location outside the model's folder that holds marker values."""
    outside, secret, marker = outside_marker(ctx)
    loc = location_of(ctx, outside, secret)
    path = external_model(ctx, loc)
    x = np.zeros(4, np.float32)
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd(inputs={"x": ctx.npy("x", x)})],
                expect="refuse", names=("w", "external"),
                check=lambda: "marker bytes from outside the model folder in an output" if outputs_contain(ctx.p("out"), marker) else None)


def ext_absolute(ctx):
    return escape_case(ctx, lambda c, o, s: str(s))


def ext_dotdot(ctx):
    return escape_case(ctx, lambda c, o, s: f"../{o.name}/{s.name}")


def ext_symlink(ctx):
    def loc(c, o, s):
        os.symlink(s, c.p("w.bin"))
        return "w.bin"
    return escape_case(ctx, loc)


def plan_weight_any_path(ctx):
    outside, secret, marker = outside_marker(ctx, values=[1234.5] * 64)
    model_path, plan_path, plan = ctx.compiled_plan()
    for w in plan["graph"]["weights"].values():
        if w["name"] == "fc2.bias":
            w["data"].update(path=str(secret), offset=0, length=256)
    plan["source"]["weight_files"][str(secret)] = hashlib.sha256(secret.read_bytes()).hexdigest()
    ctx.write_plan(plan)
    return Spec(steps=[ctx.run_cmd(inputs={"x": ctx.npy("x", f32(2, 64))})], expect="refuse",
                names=("secret.bin", "fc2.bias"),
                check=lambda: "marker bytes of a file the plan named in an output" if outputs_contain(ctx.p("out"), marker) else None)


def empty_sha(ctx):
    _, _, plan = ctx.compiled_plan()
    plan["source"]["sha256"] = ""
    for k in plan["source"]["weight_files"]:
        plan["source"]["weight_files"][k] = ""
    ctx.write_plan(plan)
    return Spec(steps=[ctx.run_cmd(inputs={"x": ctx.npy("x", f32(2, 64))})], expect="refuse",
                names=("sha256",))


def compile_over_model(ctx):
    path = ctx.copy_example("mlp")
    before = path.read_bytes()
    return Spec(steps=[ctx.compile_cmd(path, plan=path, shapes=("x=2x64",))], expect="refuse",
                names=("mlp.onnx",),
                check=lambda: "the model was overwritten" if path.read_bytes() != before else None)


def timings_symlink(ctx):
    path = ctx.copy_example("mlp")
    outside, secret, _ = outside_marker(ctx)
    before = secret.read_bytes()
    os.symlink(secret, ctx.p("plan.timings.json"))
    return Spec(steps=[ctx.compile_cmd(path, shapes=("x=2x64",))], expect="either", names=("timings",),
                check=lambda: "the timings file was written through a symlink" if secret.read_bytes() != before else None)


def dev_null(ctx):
    path = ctx.copy_example("mlp")
    side = Path("/dev/null.timings.json")
    existed = side.exists()
    return Spec(steps=[ctx.compile_cmd(path, plan=Path("/dev/null"), shapes=("x=2x64",))], expect="either",
                names=("/dev/null",),
                check=lambda: "/dev/null.timings.json was written" if side.exists() and not existed else None)


def signal_case(sig):
    def build(ctx):
        model_path, plan, _ = ctx.compiled_plan("gpt2_4l", devices=2, shapes=("input_ids=1x64",))
        ids = ctx.npy("ids", np.ones((1, 64), np.int64))
        argv = ctx.run_cmd(inputs={"input_ids": ids}, extra=["--repeat", "1000000"])

        def custom():
            shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
            # The signal's default action, whatever this process inherited: a shell that
            # starts a job in the background without job control ignores SIGINT, and an
            # ignored disposition survives exec.
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
            time.sleep(3.0)
            if p.poll() is not None:
                return "WRONG", f"ended before the signal: {p.stderr.read().decode()[:160]}"
            t0 = time.monotonic()
            p.send_signal(sig)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                return "TIMEOUT", f"still running 5 s after {sig.name}"
            dt = time.monotonic() - t0
            time.sleep(0.2)
            left = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
            shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
            if left:
                return "ABORT/SIGNAL", f"orphans left: {left}"
            if shm_after - shm_before:
                return "ESCAPE", f"stale shared memory: {sorted(shm_after - shm_before)}"
            return "OK-REFUSED", f"exit {p.returncode} {dt * 1e3:.0f} ms after {sig.name}, no orphans, no stale /dev/shm"
        return Spec(custom=custom)
    return build


def chain_10000(ctx):
    n = 10000
    nodes = []
    prev = "x"
    for i in range(n):
        out = "y" if i == n - 1 else f"t{i}"
        nodes.append(helper.make_node("Add" if i % 2 else "Relu", [prev, "c"] if i % 2 else [prev], [out]))
        prev = out
    m = model(nodes, [vi("x", TensorProto.FLOAT, [4, 8])], [vi("y", TensorProto.FLOAT, None)],
              [const("c", np.full(8, 0.001, np.float32))])
    return ctx.onnx_case(m, {"x": f32(4, 8)}, expect="run")


def output_dotdot(ctx):
    m = model([helper.make_node("Relu", ["x"], ["../../escape_y"])], [vi("x", TensorProto.FLOAT, [4])],
              [vi("../../escape_y", TensorProto.FLOAT, None)])
    spec = ctx.onnx_case(m, {"x": f32(4)}, expect="run")
    root = ctx.dir.parent
    before = set(os.listdir(root))

    def check():
        new = set(os.listdir(root)) - before
        return f"written outside the output folder: {sorted(new)}" if new else None
    spec.check = check
    return spec


O = "original"
CASES = [
    Case("range_float_count_overflow", O, "float Range whose element count overflows", range_float_overflow),
    Case("fused_attention_seq_len_0", O, "gpt2 with input_ids 1x0 (fused attention)", attention_seq0, slow=True),
    Case("plan_inline_shorter_than_shape", O, "plan inline tensor with 2 of 4 elements", plan_inline_short),
    Case("repeat_u64_max", O, "tessera-run --repeat 2^64-1", repeat_u64),
    Case("empty_graph_initializer_output", O, "no nodes, the output is an initializer", empty_graph_initializer_out),
    Case("constant_of_shape_2_40", O, "ConstantOfShape of [2^40]", constant_of_shape_2_40),
    Case("range_to_1e12", O, "float Range 0..1e12", range_1e12),
    Case("split_2_31_outputs", O, "Split num_outputs=2^31", split_2_31),
    Case("shape_input_ids_1x99999999999", O, "--shape input_ids=1x99999999999", shape_huge),
    Case("devices_4294967296", O, "--devices 4294967296", devices_2_32),
    Case("mesh_1x1000000", O, "--mesh 1x1000000", mesh_1x1e6),
    Case("plan_expand_2_53", O, "plan Expand shape edited to 2^53", plan_expand_2_53),
    Case("fifo_external_data", O, "external data location is a FIFO", fifo_external),
    Case("fifo_input", O, "--input is a FIFO", fifo_input),
    Case("dims_2_62_shape_flag", O, "--shape x=2^62x64", dims_2_62_shape),
    Case("dims_2_62_in_model", O, "model input of shape [2^62, 4]", dims_2_62_model),
    Case("corrupt_protobuf_drops_is_causal", O, "is_causal attribute with a wrong wire type", corrupt_attribute),
    Case("corrupt_protobuf_unknown_field", O, "is_causal moved to an unknown field number (vs onnxruntime)", unknown_field_attribute),
    Case("erf_gelu_large_negative", O, "Erf and erf-GELU at ±1e6 (vs onnxruntime)", erf_gelu_edges),
    Case("range_i64_overflow", O, "int64 Range whose span overflows i64", range_i64_overflow),
    Case("slice_i64_max_step", O, "Slice with step i64::MAX", slice_max_step),
    Case("attribute_wrong_type", O, "Softmax axis given as a float", wrong_typed_attribute),
    Case("attribute_unknown", O, "Relu with an alpha attribute", unknown_attribute),
    Case("reduce_mean_axes_input_opset17", O, "ReduceMean axes as an input at opset 17", reduce_mean_axes_opset17),
    Case("nan_inf_constants", O, "NaN/inf/-inf constants through the plan", nonfinite_constants),
    Case("external_data_absolute", O, "external data at an absolute path", ext_absolute),
    Case("external_data_dotdot", O, "external data at ../outside/secret.bin", ext_dotdot),
    Case("external_data_symlink_escape", O, "external data through a link out of the folder", ext_symlink),
    Case("plan_weight_any_path", O, "plan weight naming a file outside the model folder", plan_weight_any_path),
    Case("plan_empty_sha256", O, "plan with empty sha256 fields", empty_sha),
    Case("compile_output_is_model", O, "compile m.onnx -o m.onnx", compile_over_model),
    Case("timings_side_file_symlink", O, "plan.timings.json is a link to a file outside", timings_symlink),
    Case("output_dev_null", O, "compile -o /dev/null", dev_null),
    Case("sigint_during_run", O, "SIGINT while tessera-run repeats gpt2_4l", signal_case(signal.SIGINT), slow=True),
    Case("sigterm_during_run", O, "SIGTERM while tessera-run repeats gpt2_4l", signal_case(signal.SIGTERM), slow=True),
    Case("chain_10000_nodes", O, "10,000-node Relu/Add chain (vs onnxruntime)", chain_10000, slow=True),
    Case("output_name_dotdot", O, "output named ../../escape_y", output_dotdot),
]
