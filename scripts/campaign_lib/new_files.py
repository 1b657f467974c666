"""New cases about files: folders, links, FIFOs, truncated files and paths where a model,
a plan, an input or an output is expected, and writes that must not replace an input."""
from __future__ import annotations

import os

import numpy as np

from .common import Case, Spec, f32, outside_marker, unary
from .original import external_model


def dir_as_model(ctx):
    ctx.p("d.onnx").mkdir()
    return Spec(steps=[ctx.compile_cmd(ctx.p("d.onnx"))], expect="refuse", names=("d.onnx",))


def dir_as_plan(ctx):
    ctx.p("plan.json").mkdir()
    return Spec(steps=[ctx.run_cmd()], expect="refuse", names=("plan.json",))


def dangling_model(ctx):
    os.symlink(ctx.p("nowhere.onnx"), ctx.p("m.onnx"))
    return Spec(steps=[ctx.compile_cmd(ctx.p("m.onnx"))], expect="refuse", names=("m.onnx",))


def truncated_model(ctx):
    src = ctx.copy_example("mlp")
    data = src.read_bytes()
    ctx.p("t.onnx").write_bytes(data[: len(data) // 2])
    return Spec(steps=[ctx.compile_cmd(ctx.p("t.onnx"), shapes=("x=2x64",))], expect="refuse", names=("t.onnx",))


def empty_model(ctx):
    ctx.p("e.onnx").write_bytes(b"")
    return Spec(steps=[ctx.compile_cmd(ctx.p("e.onnx"))], expect="refuse", names=("e.onnx",))


def nested_groups_model(ctx):
    # 2,000,000 protobuf start-group tags: protobuf 3.4 (RUSTSEC-2024-0437) skipped them by
    # recursion and overflowed the stack.
    ctx.p("g.onnx").write_bytes(b"\x0b" * 2_000_000)
    return Spec(steps=[ctx.compile_cmd(ctx.p("g.onnx"))], expect="refuse", names=("g.onnx",))


def truncated_plan(ctx):
    _, plan_path, _ = ctx.compiled_plan()
    text = plan_path.read_text()
    plan_path.write_text(text[: len(text) // 2])
    return Spec(steps=[ctx.run_cmd(inputs={"x": ctx.npy("x", f32(2, 64))})], expect="refuse", names=("plan.json",))


def non_utf8_path(ctx):
    d = os.fsencode(str(ctx.dir)) + b"/m\xff\xfe.onnx"
    with open(d, "wb") as f:
        f.write(unary("Relu", [4]).SerializeToString())
    plan = os.fsencode(str(ctx.dir)) + b"/p\xff.json"
    x = ctx.npy("x", f32(4))
    return Spec(steps=[[os.fsencode(ctx.tessera), b"compile", d, b"-o", plan, b"--devices", b"1"],
                       [os.fsencode(ctx.run_bin), plan, b"--input", b"x=" + os.fsencode(str(x)), b"-o", os.fsencode(str(ctx.p("out")))]],
                expect="either", names=("onnx", "json"))


def ext_beyond_file(ctx):
    ctx.p("w.bin").write_bytes(np.ones(2, np.float32).tobytes())
    path = external_model(ctx, "w.bin", offset=1 << 40)
    x = ctx.npy("x", f32(4))
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd(inputs={"x": x})],
                expect="refuse", names=("w.bin", "'w'"))


def output_dir_fifo(ctx):
    spec = ctx.onnx_case(unary("Relu", [4]), {"x": f32(4)}, devices=1, expect="refuse", names=("y.npy",))
    ctx.p("out").mkdir()
    os.mkfifo(ctx.p("out", "y.npy"))
    return spec


def output_over_weights(ctx):
    """External weights in y.npy, and -o the model's own folder: the output y.npy would
    replace the weight file."""
    w = np.arange(4, dtype=np.float32)
    ctx.p("y.npy").write_bytes(w.tobytes())
    path = external_model(ctx, "y.npy")
    before = ctx.p("y.npy").read_bytes()
    x = ctx.npy("x", f32(4))
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd(inputs={"x": x}, outdir=".")],
                expect="refuse", names=("y.npy",),
                check=lambda: "the output replaced the weight file y.npy" if ctx.p("y.npy").read_bytes() != before else None)


def dot_over_model(ctx):
    path = ctx.copy_example("mlp")
    before = path.read_bytes()
    return Spec(steps=[[ctx.tessera, "dot", str(path), "--shape", "x=2x64", "-o", str(path)]], expect="refuse",
                names=("mlp.onnx",), check=lambda: "dot replaced the model" if path.read_bytes() != before else None)


def dot_over_plan_model(ctx):
    model_path, plan, _ = ctx.compiled_plan()
    before = (plan.read_bytes(), model_path.read_bytes())
    steps = [[ctx.tessera, "dot", str(plan), "-o", str(model_path)]]

    def check():
        return "dot replaced the plan or its model" if (plan.read_bytes(), model_path.read_bytes()) != before else None
    return Spec(steps=steps, expect="refuse", names=("mlp.onnx",), check=check)


def dot_over_plan(ctx):
    _, plan, _ = ctx.compiled_plan()
    before = plan.read_bytes()
    return Spec(steps=[[ctx.tessera, "dot", str(plan), "-o", str(plan)]], expect="refuse", names=("plan.json",),
                check=lambda: "dot replaced the plan" if plan.read_bytes() != before else None)


def ext_dir(ctx):
    ctx.p("w.bin").mkdir()
    path = external_model(ctx, "w.bin")
    return Spec(steps=[ctx.compile_cmd(path, devices=1)], expect="refuse", names=("w.bin",))


def output_dir_symlink(ctx):
    spec = ctx.onnx_case(unary("Relu", [4]), {"x": f32(4)}, devices=1, expect="either")
    outside, secret, _ = outside_marker(ctx)
    before = secret.read_bytes()
    ctx.p("out").mkdir()
    os.symlink(secret, ctx.p("out", "y.npy"))
    spec.check = lambda: "an output was written through a link out of the output folder" if secret.read_bytes() != before else None
    spec.names = ("y.npy", "y")
    return spec


def output_is_file(ctx):
    spec = ctx.onnx_case(unary("Relu", [4]), {"x": f32(4)}, devices=1, expect="refuse", names=("out",))
    ctx.p("out").write_text("not a folder")
    return spec


N = "new"
CASES = [
    Case("plan_truncated", N, "half a plan", truncated_plan),
    Case("plan_is_directory", N, "the plan path is a folder", dir_as_plan),
    Case("model_is_directory", N, "the model path is a folder", dir_as_model),
    Case("model_dangling_symlink", N, "the model is a dangling link", dangling_model),
    Case("model_truncated", N, "half of mlp.onnx", truncated_model),
    Case("model_nested_groups", N, "2 MB of nested protobuf groups", nested_groups_model),
    Case("model_empty_file", N, "a 0-byte model", empty_model),
    Case("non_utf8_paths", N, "model, plan and output paths with bytes 0xff 0xfe", non_utf8_path),
    Case("external_data_offset_beyond_file", N, "external data offset 2^40 in an 8-byte file", ext_beyond_file),
    Case("external_data_is_directory", N, "external data location is a folder", ext_dir),
    Case("output_folder_holds_link", N, "out/y.npy is a link to a file outside", output_dir_symlink),
    Case("output_folder_holds_fifo", N, "out/y.npy is a FIFO", output_dir_fifo),
    Case("output_over_weight_file", N, "-o the model folder whose weight file is y.npy", output_over_weights),
    Case("dot_output_is_its_model", N, "tessera dot m.onnx -o m.onnx", dot_over_model),
    Case("dot_output_over_plans_model", N, "tessera dot plan.json -o mlp.onnx (the plan's model)", dot_over_plan_model),
    Case("dot_output_is_its_plan", N, "tessera dot plan.json -o plan.json", dot_over_plan),
    Case("output_folder_is_a_file", N, "-o names a regular file", output_is_file),
]
