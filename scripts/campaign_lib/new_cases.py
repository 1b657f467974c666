"""Cases nobody listed in issue 13: what an attacker or a fuzzer would try next."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .common import Case, Spec, const, f32, folded, model, unary, vi

F = TensorProto.FLOAT


def refuse_compile(build_model, names, devices=1, shapes=()):
    """A case whose model must be refused at compile time."""
    def build(ctx):
        return Spec(steps=[ctx.compile_cmd(ctx.save(build_model()), devices=devices, shapes=shapes)],
                    expect="refuse", names=names)
    return build


def vs_ort(build_model, feeds, devices=2, expect="either", names=(), shapes=(), ort_reject_ok=""):
    """A case run end to end and compared with onnxruntime."""
    def build(ctx):
        f = feeds() if callable(feeds) else feeds
        return ctx.onnx_case(build_model(), f, devices=devices, expect=expect, names=names,
                             shapes=shapes, ort_reject_ok=ort_reject_ok)
    return build


def mlp_plan_case(edit, names, expect="refuse", feeds=None):
    """Compiles the MLP for 2 devices, edits the plan JSON, runs it."""
    def build(ctx):
        _, _, plan = ctx.compiled_plan()
        edit(plan, ctx)
        ctx.write_plan(plan)
        inputs = feeds(ctx) if feeds else {"x": ctx.npy("x", f32(2, 64))}
        return Spec(steps=[ctx.run_cmd(inputs=inputs)], expect=expect, names=names)
    return build


def mlp_run_case(inputs, names, expect="refuse", extra=()):
    """Compiles the MLP for 2 devices and runs it with the given --input files."""
    def build(ctx):
        ctx.compiled_plan()
        return Spec(steps=[ctx.run_cmd(inputs=inputs(ctx), extra=extra)], expect=expect, names=names)
    return build


def mlp_compile_case(shapes, names, devices=2, extra=(), expect="refuse"):
    def build(ctx):
        return Spec(steps=[ctx.compile_cmd(ctx.copy_example("mlp"), devices=devices, shapes=shapes, extra=extra)],
                    expect=expect, names=names)
    return build


# ---- models ---------------------------------------------------------------------------------
def neg_dim_model():
    return unary("Relu", [-5, 4])


def zero_size(op_nodes, inputs, inits=(), outs=("y",), opset=18):
    return lambda: model(op_nodes, inputs, [vi(o, F, None) for o in outs], inits, opset=opset)


def dup_names():
    return model([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["x"], ["t"]),
                  helper.make_node("Abs", ["t"], ["y"])], [vi("x", F, [4])], [vi("y", F, None)])


def cycle():
    return model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                  helper.make_node("Abs", ["b"], ["y"])], [vi("x", F, [4])], [vi("y", F, None)])


def input_shadows_initializer():
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", F, [4]), vi("w", F, [4])],
                 [vi("y", F, None)], [const("w", np.full(4, 10.0, np.float32))], ir_version=8)


def short_raw_data():
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", F, [64])], [vi("y", F, None)],
              [const("w", np.ones(64, np.float32))])
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:100]
    return m


def string_tensor():
    return model([helper.make_node("Identity", ["s"], ["y"])], [], [vi("y", TensorProto.STRING, None)],
                 [helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])])


def dtype_model(dtype):
    return lambda: model([helper.make_node("Add", ["x", "x"], ["y"])], [vi("x", dtype, [4])], [vi("y", dtype, None)])


def if_model():
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", F, [4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", F, [4])])
    return model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                 [vi("x", F, [4]), vi("c", TensorProto.BOOL, [])], [vi("y", F, None)])


def bf16_const(ctx):
    vals = np.array([1.0, 2.5, -3.0, 0.5], np.float32)
    bits = (vals.view(np.uint32) >> 16).astype(np.uint16)
    c = helper.make_tensor("c", TensorProto.BFLOAT16, [4], bits.tobytes(), raw=True)
    m = model([helper.make_node("Add", ["c", "c"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=F)],
              [], [vi("y", F, None)], [c])
    return Spec(steps=[ctx.compile_cmd(ctx.save(m), devices=1), ctx.run_cmd()], expect="either",
                names=("c", "bf16", "bfloat16"), reference={"y": vals * 2}, outdir=ctx.p("out"), outputs=("y",))


def pb_field(num, wire, payload):
    """One protobuf field: tag, then a varint or length-delimited payload."""
    def varint(v):
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)
    if wire == 0:
        return varint(num << 3) + varint(payload)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def nested_if_bytes(depth):
    """A model whose If node nests DEPTH graphs through then_branch attributes, encoded by
    hand (the onnx package refuses to serialise more than 100 levels)."""
    g = b""
    for _ in range(depth):
        attr = pb_field(1, 2, b"then_branch") + pb_field(20, 0, 5) + pb_field(6, 2, g)
        node = pb_field(1, 2, b"c") + pb_field(2, 2, b"y") + pb_field(4, 2, b"If") + pb_field(5, 2, attr)
        g = pb_field(1, 2, node) + pb_field(2, 2, b"g")
    return pb_field(1, 0, 8) + pb_field(8, 2, pb_field(2, 0, 18)) + pb_field(7, 2, g)


def nested_if_case(ctx):
    ctx.p("m.onnx").write_bytes(nested_if_bytes(3000))
    return Spec(steps=[ctx.compile_cmd(ctx.p("m.onnx"), devices=1)], expect="refuse", names=("m.onnx", "if"))


def nested_if(depth):
    """DEPTH If nodes nested through their then_branch (protobuf recursion)."""
    leaf = helper.make_graph([helper.make_node("Relu", ["x"], ["t0"])], "g0", [], [vi("t0", F, [4])])
    inner = leaf
    for d in range(1, depth):
        inner = helper.make_graph(
            [helper.make_node("If", ["c"], [f"t{d}"], then_branch=inner, else_branch=leaf)],
            f"g{d}", [], [vi(f"t{d}", F, [4])])
    return model([helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=leaf)],
                 [vi("x", F, [4]), vi("c", TensorProto.BOOL, [])], [vi("y", F, None)])


def gather_const_oob():
    return model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)], [vi("x", F, [4, 3])], [vi("y", F, None)],
                 [const("i", np.array([0, 7], np.int64))])


def gather_input_idx():
    return model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
                 [vi("x", F, [4, 3]), vi("i", TensorProto.INT64, [2])], [vi("y", F, None)])


def reshape_two_neg():
    return model([helper.make_node("Reshape", ["x", "s"], ["y"])], [vi("x", F, [4, 6])], [vi("y", F, None)],
                 [const("s", np.array([-1, -1], np.int64))])


def transpose_perm(perm):
    return lambda: unary("Transpose", [2, 3, 4], perm=perm)


def concat_axis():
    return model([helper.make_node("Concat", ["x", "x"], ["y"], axis=5)], [vi("x", F, [2, 3])], [vi("y", F, None)])


def matmul_mismatch():
    return model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, None)],
                 [const("w", np.ones((4, 5), np.float32))])


def int_div(op, a, b, dtype=np.int32, tp=TensorProto.INT32):
    return lambda: folded([helper.make_node(op, ["a", "b"], ["y"])],
                          [const("a", np.array(a, dtype)), const("b", np.array(b, dtype))], out_type=tp)


def int_div_runtime(op):
    return lambda: model([helper.make_node(op, ["a", "b"], ["y"])],
                         [vi("a", TensorProto.INT64, [3]), vi("b", TensorProto.INT64, [3])],
                         [vi("y", TensorProto.INT64, None)])


def tile_huge():
    return model([helper.make_node("Tile", ["x", "r"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, None)],
                 [const("r", np.array([2**31, 2**31], np.int64))])


def expand_huge():
    return model([helper.make_node("Expand", ["x", "s"], ["y"])], [vi("x", F, [1, 1])], [vi("y", F, None)],
                 [const("s", np.array([2**31, 2**31], np.int64))])


def pad_huge():
    return model([helper.make_node("Pad", ["x", "p"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, None)],
                 [const("p", np.array([0, 0, 2**40, 0], np.int64))])


def topk_big_k():
    return model([helper.make_node("TopK", ["x", "k"], ["y", "i"])], [vi("x", F, [2, 3])],
                 [vi("y", F, None), vi("i", TensorProto.INT64, None)], [const("k", np.array([9], np.int64))])


def long_names():
    n = "t" * 100_000
    return model([helper.make_node("Relu", ["x"], [n]), helper.make_node("Neg", [n], ["y"])],
                 [vi("x", F, [4])], [vi("y", F, None)])


def long_output_name():
    n = "o" * 300
    return model([helper.make_node("Relu", ["x"], [n])], [vi("x", F, [4])], [vi(n, F, None)])


def colliding_outputs():
    return model([helper.make_node("Relu", ["x"], ["a/b"]), helper.make_node("Neg", ["x"], ["a:b"])],
                 [vi("x", F, [4])], [vi("a/b", F, None), vi("a:b", F, None)])


def softmax_axis():
    return unary("Softmax", [2, 3], axis=7)


def where_mismatch():
    return model([helper.make_node("Where", ["c", "x", "z"], ["y"])],
                 [vi("c", TensorProto.BOOL, [3]), vi("x", F, [4]), vi("z", F, [5])], [vi("y", F, None)])


def unknown_domain():
    return model([helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft")],
                 [vi("x", F, [2, 2])], [vi("y", F, None)], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


def missing_input_tensor():
    return model([helper.make_node("Add", ["x", "nowhere"], ["y"])], [vi("x", F, [4])], [vi("y", F, None)])


def output_not_produced():
    return model([helper.make_node("Relu", ["x"], ["t"])], [vi("x", F, [4])], [vi("y", F, None)])


def no_outputs():
    return model([helper.make_node("Relu", ["x"], ["t"])], [vi("x", F, [4])], [])


def cast_nan_to_int():
    return model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)], [vi("x", F, [3])],
                 [vi("y", TensorProto.INT32, None)])


# ---- plan edits -------------------------------------------------------------------------
def steps(plan, r=1):
    return plan["ranks"][r]["steps"]


def drop_collective(plan, ctx):
    s = steps(plan)
    s[:] = [x for x in s if x["kind"] != "collective"] + []
    # keep ids consistent for the consumer: the all-reduce's output is now never defined
    # on rank 1, so validation or the rank interpreter must notice


def drop_rank(plan, ctx):
    plan["ranks"].pop()


def dup_step(plan, ctx):
    s = steps(plan, 0)
    s.insert(3, dict(s[2]))


def plan_cycle(plan, ctx):
    s = steps(plan, 0)
    comp = [i for i, x in enumerate(s) if x["kind"] == "compute"]
    a, b = comp[0], comp[1]
    s[a]["inputs"][0] = s[b]["outputs"][0]


def offset_beyond(plan, ctx):
    for w in plan["graph"]["weights"].values():
        w["data"]["offset"] = 10**12


def future_version(plan, ctx):
    plan["format_version"] = 2**64 - 1


def deep_json(ctx):
    ctx.p("plan.json").write_text("[" * 100_000 + "]" * 100_000)
    return Spec(steps=[ctx.run_cmd()], expect="refuse", names=("plan.json",))


def npy_inputs(array, dtype=None):
    return lambda ctx: {"x": ctx.npy("x", np.asarray(array, dtype=dtype))}


def truncated_npy(ctx):
    p = ctx.npy("x", f32(2, 64))
    p.write_bytes(p.read_bytes()[:200])
    return {"x": p}


# ---- file-system cases ----------------------------------------------------------------------
def bf16_input(ctx):
    m = dtype_model(TensorProto.BFLOAT16)()
    x = ctx.npy("x", np.ones(4, np.uint16))
    return Spec(steps=[ctx.compile_cmd(ctx.save(m), devices=1), ctx.run_cmd(inputs={"x": x})],
                expect="refuse", names=("x",))


def planned_memory_over_ulimit(ctx):
    m = model([helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", F, [1], [1.0])),
               helper.make_node("Add", ["x", "c"], ["y"])],
              [vi("x", F, [1])], [vi("y", F, None)], [const("s", np.array([2**31], np.int64))])
    x = ctx.npy("x", np.ones(1, np.float32))
    return Spec(steps=[ctx.compile_cmd(ctx.save(m), devices=1), ctx.run_cmd(inputs={"x": x})],
                expect="refuse", names=("over the cap",), env={"TESSERA_MAX_PLANNED_BYTES": None})


def dup_initializers():
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", F, [2])], [vi("y", F, None)],
                 [const("w", np.ones(2, np.float32)), const("w", np.full(2, 5.0, np.float32))])


def dup_inputs():
    return model([helper.make_node("Add", ["x", "x"], ["y"])], [vi("x", F, [2]), vi("x", F, [3])], [vi("y", F, None)])


def node_output_is_input():
    return model([helper.make_node("Relu", ["x"], ["x"])], [vi("x", F, [2])], [vi("x", F, None)])


def zero_batch(ctx):
    path = ctx.copy_example("mlp")
    x = np.zeros((0, 64), np.float32)
    return Spec(steps=[ctx.compile_cmd(path, shapes=("x=0x64",)), ctx.run_cmd(inputs={"x": ctx.npy("x", x)})],
                expect="either", names=("x", "0"), ort=(path, {"x": x}), outdir=ctx.p("out"), outputs=("y",))


def mlp3(ctx):
    path = ctx.copy_example("mlp")
    x = f32(3, 64)
    return Spec(steps=[ctx.compile_cmd(path, devices=3, shapes=("x=3x64",)), ctx.run_cmd(inputs={"x": ctx.npy("x", x)})],
                expect="run", ort=(path, {"x": x}), outdir=ctx.p("out"), outputs=("y",))


def mlp_nan(ctx):
    path = ctx.copy_example("mlp")
    x = f32(2, 64)
    x[0, 3], x[1, 5], x[1, 7] = np.nan, np.inf, -np.inf
    return Spec(steps=[ctx.compile_cmd(path, shapes=("x=2x64",)), ctx.run_cmd(inputs={"x": ctx.npy("x", x)})],
                expect="run", ort=(path, {"x": x}), outdir=ctx.p("out"), outputs=("y",))


def input_twice(ctx):
    ctx.compiled_plan()
    x = ctx.npy("x", f32(2, 64))
    return Spec(steps=[ctx.run_cmd(inputs={"x": x}, extra=["--input", f"x={x}"])], expect="refuse", names=("x",))


def int_min_div(ctx):
    m = int_div("Div", [-(2**63), 7], [-1, 2], np.int64, TensorProto.INT64)()
    path = ctx.save(m)
    return Spec(steps=[ctx.compile_cmd(path, devices=1), ctx.run_cmd()], expect="either",
                names=("div", "overflow"), reference={"y": np.array([-(2**63), 3], np.int64)},
                outdir=ctx.p("out"), outputs=("y",))


def cast_nan(ctx):
    spec = ctx.onnx_case(cast_nan_to_int(), {"x": np.array([np.nan, np.inf, -np.inf], np.float32)}, devices=1, ort=False)
    spec.outputs = ()
    return spec


def colliding(ctx):
    return ctx.onnx_case(colliding_outputs(), {"x": f32(4)}, devices=1, expect="either", names=("a/b", "a:b", "a_b"))


N = "new"
R = refuse_compile
CASES = [
    Case("negative_dim_in_shape_flag", N, "--shape x=-1x64", mlp_compile_case(("x=-1x64",), ("x", "-1"))),
    Case("negative_dim_in_model", N, "model input of shape [-5, 4]", R(neg_dim_model, ("x", "-5"))),
    Case("zero_batch_mlp", N, "MLP with batch 0 (vs onnxruntime)", zero_batch),
    Case("zero_size_elementwise", N, "Add/Mul/Gelu-ish on [0,4] (vs onnxruntime)",
         vs_ort(zero_size([helper.make_node("Add", ["x", "x"], ["a"]), helper.make_node("Tanh", ["a"], ["y"])],
                          [vi("x", F, [0, 4])]), {"x": np.zeros((0, 4), np.float32)})),
    Case("zero_size_matmul_inner", N, "MatMul [2,0]x[0,3] = zeros (vs onnxruntime)",
         vs_ort(zero_size([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", F, [2, 0])],
                          [const("w", np.zeros((0, 3), np.float32))]), {"x": np.zeros((2, 0), np.float32)})),
    Case("zero_size_reduce", N, "ReduceSum/ReduceMax over an empty axis (vs onnxruntime)",
         vs_ort(zero_size([helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=0),
                           helper.make_node("ReduceMax", ["x", "a"], ["z"], keepdims=0)], [vi("x", F, [0, 4])],
                          [const("a", np.array([0], np.int64))], outs=("y", "z")), {"x": np.zeros((0, 4), np.float32)})),
    Case("zero_size_softmax_norm", N, "Softmax and LayerNormalization on [0,8] (vs onnxruntime)",
         vs_ort(zero_size([helper.make_node("Softmax", ["x"], ["y"], axis=-1),
                           helper.make_node("LayerNormalization", ["x", "g"], ["z"], axis=-1)], [vi("x", F, [0, 8])],
                          [const("g", np.ones(8, np.float32))], outs=("y", "z")), {"x": np.zeros((0, 8), np.float32)})),
    Case("zero_size_movement", N, "Transpose/Concat/Gather with empty pieces (vs onnxruntime)",
         vs_ort(zero_size([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                           helper.make_node("Concat", ["t", "t"], ["y"], axis=1),
                           helper.make_node("Gather", ["x", "i"], ["z"], axis=1)], [vi("x", F, [0, 3])],
                          [const("i", np.zeros((0,), np.int64))], outs=("y", "z")), {"x": np.zeros((0, 3), np.float32)})),
    Case("opset_99999", N, "default-domain opset 99999", R(lambda: unary("Relu", [4], opset=99999), ("opset", "99999"))),
    Case("opset_1", N, "default-domain opset 1", R(lambda: unary("Relu", [4], opset=1), ("opset", "v1"))),
    Case("duplicate_tensor_names", N, "two nodes write the same tensor", R(dup_names, ("t",))),
    Case("graph_cycle", N, "a -> b -> a", R(cycle, ("a", "b", "cycle"))),
    Case("input_shadows_initializer_default", N, "graph input with an initializer, not fed: the initializer (vs onnxruntime)",
         vs_ort(input_shadows_initializer, lambda: {"x": f32(4)}, devices=1, names=("w",))),
    Case("input_shadows_initializer", N, "graph input with an initializer of the same name (vs onnxruntime)",
         vs_ort(input_shadows_initializer, lambda: {"x": f32(4), "w": f32(4, seed=1)}, devices=1, names=("w",))),
    Case("raw_data_shorter_than_dims", N, "initializer raw_data 100 of 256 bytes", R(short_raw_data, ("w",))),
    Case("string_tensor", N, "a string initializer", R(string_tensor, ("s", "string"))),
    Case("bfloat16_input", N, "Add on a bfloat16 input fed a uint16 .npy", bf16_input),
    Case("bfloat16_constant", N, "bfloat16 initializer added to itself, cast to float", bf16_const),
    Case("float8_input", N, "Add on float8e4m3fn", R(dtype_model(TensorProto.FLOAT8E4M3FN), ("x", "float8"))),
    Case("complex64_input", N, "Add on complex64", R(dtype_model(TensorProto.COMPLEX64), ("x", "complex"))),
    Case("if_subgraph", N, "If with then/else subgraphs", R(if_model, ("if",))),
    Case("nested_if_depth_3000", N, "3,000 Ifs nested in subgraph attributes", nested_if_case),
    Case("gather_const_index_out_of_range", N, "Gather of constant index 7 from 4 rows",
         vs_ort(gather_const_oob, lambda: {"x": f32(4, 3)}, devices=1, expect="refuse", names=("gather", "7"))),
    Case("gather_runtime_index_out_of_range", N, "Gather with an .npy index 99 from 4 rows",
         vs_ort(gather_input_idx, lambda: {"x": f32(4, 3), "i": np.array([0, 99], np.int64)}, devices=1,
                names=("gather", "99"))),
    Case("reshape_two_minus_one", N, "Reshape to [-1, -1]", R(reshape_two_neg, ("reshape", "-1"))),
    Case("transpose_duplicate_perm", N, "Transpose perm [0, 0, 1]", R(transpose_perm([0, 0, 1]), ("transpose", "perm"))),
    Case("transpose_perm_out_of_range", N, "Transpose perm [0, 1, 9]", R(transpose_perm([0, 1, 9]), ("transpose", "perm"))),
    Case("concat_axis_out_of_range", N, "Concat axis 5 of rank 2", R(concat_axis, ("concat", "axis"))),
    Case("matmul_shape_mismatch", N, "MatMul [2,3] x [4,5]", R(matmul_mismatch, ("matmul",))),
    Case("softmax_axis_out_of_range", N, "Softmax axis 7 of rank 2", R(softmax_axis, ("softmax", "axis"))),
    Case("where_broadcast_mismatch", N, "Where over [3], [4], [5]", R(where_mismatch, ("where",))),
    Case("int_div_by_zero_folded", N, "constant int32 Div by 0", R(int_div("Div", [6, 1], [0, 1]), ("div", "zero"))),
    Case("int_mod_by_zero_folded", N, "constant int32 Mod by 0", R(int_div("Mod", [6, 1], [0, 1]), ("mod", "zero"))),
    Case("int_div_min_by_minus_one", N, "constant int64 i64::MIN / -1",
         int_min_div),
    Case("int_div_by_zero_at_run", N, "int64 Div by 0 from .npy inputs",
         vs_ort(int_div_runtime("Div"), lambda: {"a": np.array([6, 1, 2], np.int64), "b": np.array([0, 1, 2], np.int64)},
                devices=1, names=("div", "zero"))),
    Case("tile_2_62_elements", N, "Tile [2,3] by [2^31, 2^31]", R(tile_huge, ("tile", "y"))),
    Case("expand_2_62_elements", N, "Expand [1,1] to [2^31, 2^31]", R(expand_huge, ("expand", "y"))),
    Case("pad_2_40", N, "Pad by 2^40", R(pad_huge, ("pad", "y"))),
    Case("topk_k_larger_than_axis", N, "TopK k=9 of 3", R(topk_big_k, ("topk", "9"))),
    Case("unknown_domain_op", N, "com.microsoft FusedGemm", R(unknown_domain, ("fusedgemm",))),
    Case("node_input_missing", N, "a node input nothing defines", R(missing_input_tensor, ("nowhere",))),
    Case("output_not_produced", N, "graph output nothing produces", R(output_not_produced, ("y",))),
    Case("graph_without_outputs", N, "a graph with no outputs (onnx checker and onnxruntime accept it)",
         vs_ort(no_outputs, lambda: {"x": f32(4)}, devices=1, names=("output",))),
    Case("cast_nan_inf_to_int", N, "Cast NaN/inf to int32 (implementation-defined; must not crash)",
         cast_nan),
    Case("tensor_name_100k_chars", N, "a 100,000-character tensor name (vs onnxruntime)",
         vs_ort(long_names, lambda: {"x": f32(4)}, devices=1)),
    Case("output_name_300_chars", N, "an output whose file name is too long", vs_ort(long_output_name, lambda: {"x": f32(4)}, devices=1, names=("o" * 20,))),
    Case("outputs_same_file_name", N, "outputs a/b and a:b (both a_b.npy)", colliding),
    Case("shape_flag_unknown_input", N, "--shape nope=2x64", mlp_compile_case(("nope=2x64",), ("nope",))),
    Case("shape_flag_twice", N, "--shape x=2x64 --shape x=4x64", mlp_compile_case(("x=2x64", "x=4x64"), ("x",))),
    Case("shape_flag_empty_dims", N, "--shape x=", mlp_compile_case(("x=",), ("x",))),
    Case("devices_0", N, "--devices 0", mlp_compile_case(("x=2x64",), ("devices", "0"), devices=0)),
    Case("devices_3_indivisible", N, "MLP on 3 devices (dims not divisible; vs onnxruntime)", mlp3),
    Case("plan_missing_collective_partner", N, "rank 1's all-reduce removed", mlp_plan_case(drop_collective, ("rank 1", "all_reduce", "collective"))),
    Case("plan_rank_missing", N, "a 2-device plan with one rank", mlp_plan_case(drop_rank, ("rank",))),
    Case("plan_duplicate_step", N, "a step repeated (its output defined twice)", mlp_plan_case(dup_step, ("value", "defined", "step"))),
    Case("plan_cycle", N, "a step reading a value defined later", mlp_plan_case(plan_cycle, ("value", "defined", "step"))),
    Case("plan_weight_offset_beyond_file", N, "every weight at offset 10^12", mlp_plan_case(offset_beyond, ("offset", "mlp.onnx", "fc"))),
    Case("plan_format_version_u64_max", N, "format_version 2^64-1", mlp_plan_case(future_version, ("format_version", "version"))),
    Case("plan_json_nested_100k", N, "a plan of 100,000 nested arrays", deep_json),
    Case("npy_wrong_dtype", N, "float64 input for a float32 model", mlp_run_case(npy_inputs(np.zeros((2, 64)), np.float64), ("x",))),
    Case("npy_wrong_shape", N, "input 3x64 for a 2x64 plan", mlp_run_case(npy_inputs(np.zeros((3, 64)), np.float32), ("x",))),
    Case("npy_truncated", N, "an .npy cut at 200 bytes", mlp_run_case(truncated_npy, ("x",))),
    Case("npy_is_directory", N, "--input x=<folder>", mlp_run_case(lambda ctx: {"x": ctx.dir}, ("x",))),
    Case("npy_nan_input", N, "NaN/inf inputs through the MLP (vs onnxruntime)", mlp_nan),
    Case("input_unknown_name", N, "--input for a name the plan lacks", mlp_run_case(lambda ctx: {"x": ctx.npy("x", f32(2, 64)), "zz": ctx.npy("zz", f32(2))}, ("zz",))),
    Case("input_missing", N, "no --input", mlp_run_case(lambda ctx: {}, ("x",))),
    Case("input_twice", N, "--input x twice", input_twice),
    Case("duplicate_initializers", N, "two initializers named w", R(dup_initializers, ("w",))),
    Case("duplicate_graph_inputs", N, "two graph inputs named x", R(dup_inputs, ("x",))),
    Case("node_output_is_graph_input", N, "Relu writes its own input x", R(node_output_is_input, ("x",))),
    Case("attribute_missing_required", N, "Cast without its required 'to'",
         R(lambda: model([helper.make_node("Cast", ["x"], ["y"])], [vi("x", F, [4])], [vi("y", F, None)]), ("cast", "to"))),
    Case("planned_memory_over_ulimit", N, "a run needing 16 GiB under the 4 GiB limit, no TESSERA_MAX_PLANNED_BYTES",
         planned_memory_over_ulimit),
]
