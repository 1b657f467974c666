#!/usr/bin/env python3
"""Writes the official ONNX backend node test cases to OUT_DIR (default .cache/onnx-conformance).

Layout (same as `backend-test-tools generate-data`):
    OUT_DIR/node/<case>/model.onnx
    OUT_DIR/node/<case>/test_data_set_0/{input_N.pb,output_N.pb}
plus copies of the data sets the installed onnx wheel ships (pytorch-converted,
pytorch-operator, simple) when present. Idempotent: does nothing if OUT_DIR/.done exists.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=".cache/onnx-conformance")
    args = parser.parse_args()
    out = os.path.abspath(args.out_dir)
    done = os.path.join(out, ".done")
    if os.path.exists(done):
        print(f"gen_conformance: {out} is up to date")
        return 0
    try:
        import onnx
        import onnx.backend.test.case.node as node_cases
        from onnx.backend.test import cmd_tools
    except ImportError as e:  # pragma: no cover - depends on the environment
        print(f"gen_conformance: onnx is not installed ({e})", file=sys.stderr)
        return 2

    os.makedirs(out, exist_ok=True)
    cases = node_cases.collect_testcases()
    written, failed = 0, []
    original = cmd_tools.model_test.collect_testcases
    try:
        for case in cases:
            # Reuse onnx's own serialisation (cmd_tools.generate_data) one case at a time, so
            # one case that cannot be written does not stop the rest.
            cmd_tools.model_test.collect_testcases = lambda case=case: [case]
            try:
                cmd_tools.generate_data(argparse.Namespace(output=out))
                written += 1
            except Exception as e:  # noqa: BLE001 - report and continue
                failed.append(f"{case.name}: {e}")
    finally:
        cmd_tools.model_test.collect_testcases = original

    shipped = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for name in ("pytorch-converted", "pytorch-operator", "simple"):
        src = os.path.join(shipped, name)
        if os.path.isdir(src):
            dst = os.path.join(out, name)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)

    for f in failed:
        print(f"gen_conformance: skipped {f}", file=sys.stderr)
    with open(done, "w") as f:
        f.write(f"onnx {onnx.__version__}: {written} node cases\n")
    print(f"gen_conformance: wrote {written} node cases to {out} (onnx {onnx.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
