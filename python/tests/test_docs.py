"""docs/python.md's example runs as written (from the repository root) and its assertion,
tessera's outputs against onnxruntime's, holds."""
import os
import re

from conftest import ROOT


def test_python_md_example_runs():
    text = (ROOT / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/python.md has no python block"
    code = blocks[0]
    assert "tessera.InferenceSession" in code and "devices=2" in code
    assert len(code.strip().splitlines()) <= 12
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code, "docs/python.md", "exec"), {})
    finally:
        os.chdir(cwd)
