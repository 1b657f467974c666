#!/usr/bin/env python3
"""Adversarial campaign against the real binaries (issue 13): re-creates every case of the
issue's original fuzzing campaign and adds cases nobody listed, runs each under a timeout
and a memory limit, and classifies what happened.

    cargo build -p tessera -p tessera-runtime --bins
    python3 scripts/campaign.py            # every case (a few minutes on 2 cores)
    python3 scripts/campaign.py --quick    # all but the slow cases (CI, scripts/test.sh)
    python3 scripts/campaign.py -k range   # cases whose name contains 'range'
    python3 scripts/campaign.py --keep DIR # keep the case folders (models, plans, outputs)

Classes. Passing: OK-REFUSED (non-zero exit, one line on stderr naming the thing, no panic,
abort or signal) and OK-RAN (exit 0, outputs equal to onnxruntime's to 1e-4 where it runs
the model, or to an expected value). Failing: PANIC, ABORT/SIGNAL, TIMEOUT (hang), OOM
(an allocation failed under the memory limit), WRONG (exit 0 with outputs that differ, an
invalid input accepted, or a valid one refused), ESCAPE (read or wrote outside where the
user pointed, seen by content markers), POOR-ERROR (a refusal that is not one line naming
the thing). Exit status 1 when any case fails.

Each command runs with a 20 s timeout and a 4 GiB address-space limit (RLIMIT_AS);
tessera-run gets TESSERA_MAX_PLANNED_BYTES=3 GiB so that its planned-memory check matches
that limit rather than the machine's memory.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEM_LIMIT = 4 << 30
PLANNED_CAP = 3 << 30
TOL = 1e-4
PASSING = ("OK-REFUSED", "OK-RAN")
FAILING = ("PANIC", "ABORT/SIGNAL", "TIMEOUT", "OOM", "WRONG", "ESCAPE", "POOR-ERROR")


def limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def execute(argv, timeout, env_extra=None, cwd=None):
    """Runs ARGV in its own session under the limits; returns (rc, stdout, stderr, secs,
    timed_out). On a timeout the whole process group is killed."""
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    env["TESSERA_MAX_PLANNED_BYTES"] = str(PLANNED_CAP)
    for k, v in (env_extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                         preexec_fn=limits, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        timed_out = True
    dec = lambda b: b.decode("utf-8", "replace")
    return p.returncode, dec(out), dec(err), time.monotonic() - t0, timed_out


def crash_class(rc, err, timed_out):
    """The failing class of a crashed command, or None."""
    if timed_out:
        return "TIMEOUT"
    if "memory allocation of" in err or "MemoryError" in err:
        return "OOM"
    if "panicked" in err or "RUST_BACKTRACE" in err:
        return "PANIC"
    if rc < 0 or rc > 128 or "overflowed its stack" in err or "Aborted" in err:
        return "ABORT/SIGNAL"
    return None


def first_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[0].strip() if lines else ""


def refusal_ok(err, names):
    """Whether stderr is one line naming one of NAMES; returns (ok, why not)."""
    lines = [l for l in err.splitlines() if l.strip()]
    if not lines:
        return False, "nothing on stderr"
    if len(lines) > 1:
        return False, f"{len(lines)} lines on stderr"
    low = lines[0].lower()
    if names and not any(n.lower() in low for n in names):
        return False, f"the error names none of {list(names)}"
    return True, ""


def reference_outputs(spec):
    """Expected outputs: spec.reference, or onnxruntime's (run in a child process under the
    same limits). Returns (dict or None, why none)."""
    import numpy as np

    if spec.reference is not None:
        return spec.reference, ""
    if spec.ort is None:
        return None, "no reference"
    model, feeds = spec.ort
    feeds_file = Path(str(model) + ".feeds.npz")
    out_file = Path(str(model) + ".ort.npz")
    np.savez(feeds_file, **feeds)
    rc, _, err, _, to = execute([sys.executable, __file__, "--ort", str(model), str(feeds_file),
                                 str(out_file)], 120)
    if rc != 0 or to:
        return None, "onnxruntime: " + (first_line(err.split("ORT-ERROR:")[-1]) if not to else "timeout")[:160]
    with np.load(out_file, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, ""


def ort_worker(model, feeds_file, out_file):
    import numpy as np
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        with np.load(feeds_file, allow_pickle=False) as z:
            feeds = {k: z[k] for k in z.files}
        outs = s.run(None, feeds)
        np.savez(out_file, **{o.name: v for o, v in zip(s.get_outputs(), outs)})
    except Exception as e:  # noqa: BLE001 - any rejection is the answer
        print("ORT-ERROR: " + " ".join(str(e).split()), file=sys.stderr)
        sys.exit(1)


def out_file_names(names):
    """tessera-run's file name (no .npy) for each output, in order
    (runtime/src/bin/tessera-run.rs, file_name and output_paths)."""
    taken, out = set(), []
    for name in names:
        s = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name)
        base = "_" + s if not s or s.startswith(".") else s
        stem, k = base, 1
        while stem in taken:
            k += 1
            stem = f"{base}_{k}"
        taken.add(stem)
        out.append(stem)
    return out


def compare(spec, ref):
    """Our outputs against REF; returns a difference message or ''."""
    import numpy as np

    for name, stem in zip(spec.outputs, out_file_names(spec.outputs)):
        if name not in ref:
            return f"no reference for output '{name}'"
        f = spec.outdir / (stem + ".npy")
        if not f.exists():
            return f"output '{name}' was not written ({f.name})"
        ours = np.load(f, allow_pickle=False)
        want = np.asarray(ref[name])
        if ours.shape != want.shape:
            return f"output '{name}': shape {ours.shape} vs {want.shape}"
        if ours.dtype != want.dtype:
            return f"output '{name}': dtype {ours.dtype} vs {want.dtype}"
        if ours.size == 0:
            continue
        if ours.dtype.kind in "fc":
            if not np.allclose(ours, want, rtol=TOL, atol=TOL, equal_nan=True):
                d = np.nanmax(np.abs(ours.astype(np.float64) - want.astype(np.float64)))
                return f"output '{name}': max abs difference {d:.3g}"
        elif not np.array_equal(ours, want):
            return f"output '{name}': values differ"
    return ""


def run_case(case, ctx_root, bins):
    from campaign_lib.common import Ctx

    ctx = Ctx(ctx_root, case.name, bins)
    t0 = time.monotonic()
    try:
        spec = case.build(ctx)
    except Exception as e:  # a case that cannot be built is a bug of the campaign
        return "SETUP-ERROR", f"{type(e).__name__}: {e}", 0.0
    if spec.custom is not None:
        cls, note = spec.custom()
        return cls, note, time.monotonic() - t0
    rc, err, last, timed_out = 0, "", None, False
    for argv in spec.steps:
        rc, out, err, secs, timed_out = execute(argv, spec.timeout, spec.env, cwd=ctx.dir)
        last = argv
        if rc != 0 or timed_out:
            break
    secs = time.monotonic() - t0
    step = ""
    if last:
        words = [os.fsdecode(w) for w in last[:2]]
        step = Path(words[0]).name + (" compile" if words[1:] == ["compile"] else "")
    crash = crash_class(rc, err, timed_out)
    if crash:
        return crash, f"{step}: {first_line(err)[:200] or f'exit {rc}'}", secs
    if spec.check is not None:
        msg = spec.check()
        if msg:
            return "ESCAPE", msg, secs
    if rc != 0:
        if spec.expect == "run":
            return "WRONG", f"refused a valid input: {first_line(err)[:200]}", secs
        ok, why = refusal_ok(err, spec.names)
        if not ok:
            return "POOR-ERROR", f"{step}: {why}: {first_line(err)[:160]}", secs
        return "OK-REFUSED", f"{step}: {first_line(err)[:200]}", secs
    if spec.expect == "refuse":
        return "WRONG", "accepted an invalid input (exit 0)", secs
    if not spec.outputs:
        return "OK-RAN", "exit 0", secs
    ref, why = reference_outputs(spec)
    if ref is None:
        if spec.ort is not None and not spec.ort_reject_ok:
            return "WRONG", f"ran what {why[:180]} rejects", secs
        return "OK-RAN", f"exit 0 ({spec.ort_reject_ok or why})", secs
    diff = compare(spec, ref)
    if diff:
        return "WRONG", diff, secs
    return "OK-RAN", "outputs match " + ("onnxruntime" if spec.reference is None else "the expected values"), secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the slow cases")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--keep", type=Path, help="keep the case folders here")
    ap.add_argument("--ort", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--bin-dir", type=Path, default=Path(__file__).resolve().parents[1] / "target" / "debug")
    a = ap.parse_args()
    if a.ort:
        ort_worker(*a.ort)
        return 0
    from campaign_lib import new_cases, new_files, original

    bins = {b: a.bin_dir / b for b in ("tessera", "tessera-run")}
    missing = [str(p) for p in bins.values() if not p.exists()]
    if missing:
        print(f"campaign: missing {', '.join(missing)}; run cargo build -p tessera -p tessera-runtime --bins", file=sys.stderr)
        return 2
    cases = [c for c in original.CASES + new_cases.CASES + new_files.CASES if a.k in c.name and not (a.quick and c.slow)]
    root = Path(tempfile.mkdtemp(prefix="tessera-campaign-")) if a.keep is None else a.keep
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.monotonic()
    for c in cases:
        cls, note, secs = run_case(c, root, bins)
        rows.append((c, cls, note, secs))
        print(f"{cls:<12} {c.origin:<8} {c.name:<40} {secs:6.2f}s  {note}", flush=True)
    if a.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| class | original | new |")
    print("|---|---:|---:|")
    for cls in PASSING + FAILING + ("SETUP-ERROR",):
        n_o = sum(1 for c, k, _, _ in rows if k == cls and c.origin == "original")
        n_n = sum(1 for c, k, _, _ in rows if k == cls and c.origin == "new")
        if n_o or n_n or cls in PASSING:
            print(f"| {cls} | {n_o} | {n_n} |")
    bad = [(c, k, n) for c, k, n, _ in rows if k not in PASSING]
    n_o = sum(1 for c, *_ in rows if c.origin == "original")
    print(f"\ncampaign: {len(rows)} cases ({n_o} original, {len(rows) - n_o} new), "
          f"{len(rows) - len(bad)} passed, {len(bad)} failed, {time.monotonic() - t_all:.0f} s")
    for c, k, n in bad:
        print(f"  FAILED {k}: {c.name}: {n}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
