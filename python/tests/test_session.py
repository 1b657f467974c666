"""tessera.InferenceSession against onnxruntime on the example models (and MiniLM when
fetched): same outputs, onnxruntime-shaped inputs/outputs, feeds checked with the runtime's
messages, resident ranks reused across calls and threads, Ctrl-C, plans saved and reloaded."""
import _thread
import gc
import pathlib
import signal
import threading

import numpy as np
import onnxruntime as ort
import pytest

import tessera

from conftest import MODELS, ROOT

# (model, input name, devices); inputs are the recorded ones beside each example.
EXAMPLES = [
    ("mlp", "x", 2),
    ("mlp_gemm", "x", 2),
    ("gpt2_1l", "input_ids", 2),
    ("gpt2_4l", "input_ids", 4),
    ("llama_1l", "input_ids", 2),
    ("llama_4l", "input_ids", 3),
    ("sdpa_2l", "x", 2),
]


def recorded_input(model, name):
    return np.load(MODELS / model / f"input_{name}.npy")


def assert_close(got, want, what):
    assert got.shape == want.shape, what
    assert got.dtype == want.dtype, what
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-4 * scale, f"{what}: max abs error {err} (scale {scale})"


def session_for(model, name, devices):
    x = recorded_input(model, name)
    sess = tessera.InferenceSession(
        str(MODELS / f"{model}.onnx"), devices=devices, shapes={name: list(x.shape)}
    )
    return sess, {name: x}


@pytest.mark.parametrize("model,name,devices", EXAMPLES)
def test_outputs_equal_onnxruntime(model, name, devices):
    sess, feeds = session_for(model, name, devices)
    ref = ort.InferenceSession(str(MODELS / f"{model}.onnx"), providers=["CPUExecutionProvider"])
    want = ref.run(None, feeds)
    got = sess.run(None, feeds)
    assert len(got) == len(want)
    for o, g, w in zip(ref.get_outputs(), got, want):
        assert_close(g, w, f"{model} output '{o.name}'")
    # By name, in the order asked for, as onnxruntime does.
    names = [o.name for o in ref.get_outputs()]
    again = sess.run(names[::-1], feeds)
    for g, w in zip(again, ref.run(names[::-1], feeds)):
        assert_close(g, w, f"{model} (outputs by name)")


def test_minilm_equals_onnxruntime():
    model = ROOT / ".cache" / "models" / "paraphrase-MiniLM-L3-v2.onnx"
    data = ROOT / ".cache" / "models" / "minilm" / "b8"
    if not model.is_file() or not data.is_dir():
        pytest.skip("MiniLM not fetched (run scripts/setup.sh)")
    feeds = {n: np.load(data / f"{n}.npy") for n in ("input_ids", "attention_mask")}
    shapes = {n: list(v.shape) for n, v in feeds.items()}
    sess = tessera.InferenceSession(str(model), devices=2, shapes=shapes)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for o, g, w in zip(ref.get_outputs(), sess.run(None, feeds), ref.run(None, feeds)):
        assert_close(g, w, f"MiniLM output '{o.name}'")


def test_inputs_and_outputs_are_shaped_like_onnxruntime():
    sess, feeds = session_for("gpt2_1l", "input_ids", 2)
    ref = ort.InferenceSession(str(MODELS / "gpt2_1l.onnx"), providers=["CPUExecutionProvider"])
    for mine, theirs in [(sess.get_inputs(), ref.get_inputs()), (sess.get_outputs(), ref.get_outputs())]:
        assert [a.name for a in mine] == [a.name for a in theirs]
        assert [a.type for a in mine] == [a.type for a in theirs]
    assert sess.get_inputs()[0].shape == list(feeds["input_ids"].shape)
    (logits,) = sess.run(None, feeds)
    assert sess.get_outputs()[0].shape == list(logits.shape)
    assert sess.get_inputs()[0].type == "tensor(int64)"
    assert sess.get_outputs()[0].type == "tensor(float)"


def rank_threads():
    """(tid, name) of this process's tessera rank threads (Linux)."""
    out = []
    for task in pathlib.Path("/proc/self/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("tessera-rank"):
            out.append((task.name, name))
    return sorted(out)


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_repeated_calls_reuse_the_same_rank_threads():
    gc.collect()  # sessions of earlier tests held in reference cycles end their ranks now
    before = set(rank_threads())
    sess, feeds = session_for("mlp", "x", 2)
    ranks = sorted(set(rank_threads()) - before)
    assert [n for _, n in ranks] == ["tessera-rank-0", "tessera-rank-1"], (before, ranks)
    first = sess.run(None, feeds)[0]
    for _ in range(50):
        np.testing.assert_array_equal(sess.run(None, feeds)[0], first)
    assert sorted(set(rank_threads()) - before) == ranks
    del sess
    assert set(rank_threads()) - before == set()


def test_calls_from_several_threads_get_their_own_outputs():
    sess, feeds = session_for("mlp", "x", 2)
    x = feeds["x"]
    expected = {k: sess.run(None, {"x": x * k})[0] for k in range(1, 5)}
    errors = []

    def worker(k):
        try:
            for _ in range(25):
                np.testing.assert_array_equal(sess.run(None, {"x": x * k})[0], expected[k])
        except Exception as e:  # reported below, with the thread's factor
            errors.append((k, e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize(
    "feeds,message",
    [
        ({}, "input 'x': missing (expected f32[4, 64])"),
        ({"x": np.zeros((4, 63), np.float32)}, "input 'x': expected f32[4, 64], got f32[4, 63]"),
        ({"x": np.zeros((4, 64), np.float64)}, "input 'x': expected f32[4, 64], got f64[4, 64]"),
        (
            {"x": np.zeros((4, 64), np.float32), "z": np.zeros(1, np.float32)},
            "input 'z': not an input of the model (its inputs are: x)",
        ),
        ({"x": np.zeros((4, 64), np.uint16)}, "input 'x': numpy dtype uint16 is not supported"),
    ],
)
def test_bad_feeds_raise_with_the_runtime_message(feeds, message):
    sess, good = session_for("mlp", "x", 2)
    with pytest.raises(tessera.InvalidArgument) as e:
        sess.run(None, feeds)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, tessera.TesseraError)
    # The session still runs.
    assert_close(sess.run(None, good)[0], np.load(MODELS / "mlp" / "ort_output_y.npy"), "after")


def test_bad_options_and_sources_raise_one_line_errors(tmp_path):
    with pytest.raises(tessera.InvalidArgument, match="^output 'nope': not an output of the model"):
        sess, feeds = session_for("mlp", "x", 2)
        sess.run(["nope"], feeds)
    with pytest.raises(tessera.InvalidArgument, match="^backend: unknown backend 'tpu'"):
        tessera.InferenceSession(str(MODELS / "mlp.onnx"), shapes={"x": [4, 64]}, backend="tpu")
    with pytest.raises(tessera.InvalidArgument, match="^objective: invalid objective 'fast'"):
        tessera.compile(str(MODELS / "mlp.onnx"), shapes={"x": [4, 64]}, objective="fast")
    with pytest.raises(tessera.TesseraError, match="dynamic dim 0 \\('batch'\\)"):
        tessera.compile(str(MODELS / "mlp.onnx"))
    missing = tmp_path / "missing.onnx"
    with pytest.raises(tessera.TesseraError, match="missing.onnx"):
        tessera.InferenceSession(str(missing))
    plan = tmp_path / "not_a_plan.json"
    plan.write_text("{}")
    with pytest.raises(tessera.TesseraError, match="is not a Tessera plan"):
        tessera.InferenceSession(str(plan))


def test_plan_save_round_trip(tmp_path):
    x = recorded_input("mlp", "x")
    plan = tessera.compile(str(MODELS / "mlp.onnx"), devices=2, shapes={"x": list(x.shape)})
    assert plan.devices == 2
    assert "devices 2" in plan.summary()
    assert plan.to_dot().startswith("digraph") and plan.to_dot(1).startswith("digraph")
    path = tmp_path / "mlp.plan.json"
    plan.save(str(path))
    want = np.load(MODELS / "mlp" / "ort_output_y.npy")
    from_plan = tessera.InferenceSession(plan).run(None, {"x": x})[0]
    from_file = tessera.InferenceSession(path).run(None, {"x": x})[0]  # os.PathLike works
    assert_close(from_plan, want, "session on the Plan object")
    np.testing.assert_array_equal(from_file, from_plan)
    loaded = tessera.Plan.load(str(path))
    assert loaded.devices == 2 and loaded.summary() == plan.summary()
    sess = tessera.InferenceSession(str(path), devices=2)
    assert sess.plan.devices == 2 and "devices 2" in sess.plan.summary()
    with pytest.raises(tessera.InvalidArgument, match="was compiled for 2 devices"):
        tessera.InferenceSession(str(path), devices=3)
    # The plan file is what tessera-run reads: the model path is relative to it.
    moved = tmp_path / "sub"
    moved.mkdir()
    sess.plan.save(str(moved / "again.json"))
    np.testing.assert_array_equal(
        tessera.InferenceSession(str(moved / "again.json")).run(None, {"x": x})[0], from_plan
    )


def test_ctrl_c_stops_a_run_and_the_session_stays_usable():
    shapes = {"input_ids": [64, 64]}
    sess = tessera.InferenceSession(str(MODELS / "gpt2_4l.onnx"), devices=2, shapes=shapes)
    ids = (np.arange(64 * 64, dtype=np.int64) % 50).reshape(64, 64)
    # Python's own SIGINT handler, whatever this process inherited: under a shell that
    # started it in the background without job control SIGINT is ignored, and
    # interrupt_main() then does nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in range(1000):
            sess.run(None, {"input_ids": ids})
    timer.join()
    a = sess.run(None, {"input_ids": ids})[0]
    b = sess.run(None, {"input_ids": ids})[0]
    np.testing.assert_array_equal(a, b)


def test_cuda_backend_runs_or_says_why_not():
    x = recorded_input("mlp", "x")
    try:
        sess = tessera.InferenceSession(
            str(MODELS / "mlp.onnx"), devices=2, shapes={"x": list(x.shape)}, backend="cuda"
        )
    except tessera.TesseraError as e:
        # A wheel built without the cuda feature (the default) says so in one line.
        assert str(e) == "CUDA backend not compiled in: rebuild with --features cuda"
        return
    try:
        (y,) = sess.run(None, {"x": x})
    except tessera.TesseraError as e:
        pytest.skip(f"cuda build without a usable GPU: {e}")
    assert_close(y, np.load(MODELS / "mlp" / "ort_output_y.npy"), "cuda session")
