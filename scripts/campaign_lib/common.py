"""Shared pieces of the adversarial campaign (scripts/campaign.py): what a case is, the
context a case builds its files in, and helpers that build ONNX models, .npy inputs and
edited plans."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "models"


@dataclass
class Spec:
    """What a case runs and what counts as correct.

    steps: commands run one after another; the first that exits non-zero ends the case and
    is the one classified. expect: 'refuse' (exit 0 is WRONG: the input is invalid),
    'run' (a refusal is WRONG: the input is valid and onnxruntime runs it) or 'either'.
    names: an OK refusal's one-line error must contain one of these (case-insensitive).
    ort: (model, feeds) whose onnxruntime outputs our outputs (outdir/<name>.npy) must
    equal to 1e-4; reference: expected outputs given directly (numpy), used instead.
    check: run after the steps; returns a message when something was read or written
    outside where the user pointed (ESCAPE). custom: a case that runs itself and returns
    (class, note).
    """

    steps: list = field(default_factory=list)
    expect: str = "either"
    names: tuple = ()
    ort: Optional[tuple] = None
    ort_reject_ok: str = ""
    reference: Optional[dict] = None
    outdir: Optional[Path] = None
    outputs: tuple = ()
    check: Optional[Callable[[], Optional[str]]] = None
    custom: Optional[Callable[[], tuple]] = None
    env: dict = field(default_factory=dict)
    timeout: float = 20.0


@dataclass
class Case:
    """One case: a name, where it comes from ('original': listed in issue 13's Why;
    'new': not listed there), what it tries, and the function that builds its Spec."""

    name: str
    origin: str
    what: str
    build: Callable[["Ctx"], Spec]
    slow: bool = False


class Ctx:
    """A case's folder and the binaries under test."""

    def __init__(self, root: Path, name: str, bins: dict):
        self.dir = root / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.tessera = str(bins["tessera"])
        self.run_bin = str(bins["tessera-run"])

    def p(self, *parts) -> Path:
        return self.dir.joinpath(*parts)

    # ---- commands ---------------------------------------------------------------------
    def compile_cmd(self, model, plan="plan.json", devices=2, shapes=(), extra=()):
        argv = [self.tessera, "compile", str(model), "-o", str(self.p(plan)) if isinstance(plan, str) else str(plan)]
        if devices is not None:
            argv += ["--devices", str(devices)]
        for s in shapes:
            argv += ["--shape", s]
        return argv + list(extra)

    def run_cmd(self, plan="plan.json", inputs=None, outdir="out", extra=()):
        argv = [self.run_bin, str(self.p(plan)) if isinstance(plan, str) else str(plan)]
        for name, path in (inputs or {}).items():
            argv += ["--input", f"{name}={path}"]
        if outdir is not None:
            argv += ["-o", str(self.p(outdir))]
        return argv + list(extra)

    # ---- files ------------------------------------------------------------------------
    def save(self, model: onnx.ModelProto, name="m.onnx", check=False) -> Path:
        path = self.p(name)
        if check:
            onnx.checker.check_model(model)
        path.write_bytes(model.SerializeToString())
        return path

    def npy(self, name: str, array) -> Path:
        path = self.p(name + ".npy")
        np.save(path, np.asarray(array))
        return path

    def copy_example(self, name: str) -> Path:
        """Copies examples/models/NAME.onnx (and its weight folder, if any) here."""
        src = EXAMPLES / f"{name}.onnx"
        dst = self.p(f"{name}.onnx")
        shutil.copy(src, dst)
        return dst

    def onnx_case(self, model, feeds, devices=2, shapes=(), expect="either", names=(),
                  ort=True, ort_reject_ok="", name="m.onnx", reference=None, run_extra=()):
        """The usual case: save MODEL, compile it, run it with FEEDS, compare with
        onnxruntime (or with REFERENCE)."""
        path = self.save(model, name)
        inputs = {k: self.npy("in_" + k.replace("/", "_"), v) for k, v in feeds.items()}
        outs = tuple(o.name for o in model.graph.output)
        return Spec(
            steps=[self.compile_cmd(path, devices=devices, shapes=shapes),
                   self.run_cmd(inputs=inputs, extra=run_extra)],
            expect=expect, names=names,
            ort=(path, feeds) if ort and reference is None else None,
            ort_reject_ok=ort_reject_ok, reference=reference,
            outdir=self.p("out"), outputs=outs)

    def compiled_plan(self, example="mlp", devices=2, shapes=("x=2x64",)):
        """Compiles an example model here now; returns (model path, plan path, plan dict)."""
        import subprocess

        model = self.copy_example(example)
        plan = self.p("plan.json")
        argv = self.compile_cmd(model, devices=devices, shapes=shapes)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"setup compile failed: {r.stderr.strip()}")
        return model, plan, json.loads(plan.read_text())

    def write_plan(self, plan: dict, name="plan.json") -> Path:
        path = self.p(name)
        path.write_text(json.dumps(plan, indent=1))
        return path


# ---- ONNX model builders ------------------------------------------------------------------
def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, inits=(), opset=18, ir_version=None, extra_opsets=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    opsets = [helper.make_opsetid("", opset)] + list(extra_opsets)
    m = helper.make_model(graph, opset_imports=opsets, producer_name="campaign")
    m.ir_version = ir_version if ir_version is not None else min(m.ir_version, 10)
    return m


def const(name, array, dtype=None):
    a = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
    return numpy_helper.from_array(a, name)


def f32(*shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def unary(op, x_shape, opset=18, **attrs):
    """x → OP → y, float32."""
    return model([helper.make_node(op, ["x"], ["y"], **attrs)],
                 [vi("x", TensorProto.FLOAT, list(x_shape))],
                 [vi("y", TensorProto.FLOAT, None)], opset=opset)


def folded(nodes, inits, out="y", out_type=TensorProto.FLOAT, opset=18):
    """A graph whose only input x (float32[1]) is added to nothing: the nodes compute OUT
    from initializers (constant folding at compile time); y is then OUT."""
    return model(list(nodes), [], [vi(out, out_type, None)], inits, opset=opset)


def outside_marker(ctx: Ctx, values=(1234.5, 6789.25, -4242.0, 31337.0)) -> tuple:
    """A folder beside the case folder holding a float file of marker values; returns
    (folder, file, the marker array)."""
    outside = ctx.dir.parent / (ctx.dir.name + "_outside")
    if outside.exists():
        shutil.rmtree(outside)
    outside.mkdir()
    arr = np.array(values, dtype=np.float32)
    f = outside / "secret.bin"
    f.write_bytes(arr.tobytes())
    return outside, f, arr


def outputs_contain(outdir: Path, marker: np.ndarray) -> bool:
    """Whether any .npy under OUTDIR holds one of MARKER's values."""
    if not outdir.exists():
        return False
    for f in outdir.glob("*.npy"):
        try:
            a = np.load(f)
        except Exception:
            continue
        if a.dtype.kind == "f" and np.isin(a.astype(np.float32), marker).any():
            return True
    return False
