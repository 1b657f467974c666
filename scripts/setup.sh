#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine and produces the test data:
#   - Debian: graphviz (DOT checks, SVG rendering); binutils (objdump for
#     scripts/check_wide_loops.py)
#   - Debian: python3-dev when libpython's shared library is missing (the python/ crate links
#     it under cargo test; the wheel itself does not)
#   - PyPI: onnx==1.23.2 (conformance generators), onnxruntime, onnx-ir (onnxruntime's
#     MatMulNBits quantizer imports it), numpy, tokenizers; maturin
#     and pytest (the Python package and its tests)
#   - .cache/models: paraphrase-MiniLM-L3-v2 + real token ids + onnxruntime outputs
#   - .cache/onnx-conformance: the official ONNX backend node test cases
#   - .cache/quant: small int8/uint8 DequantizeLinear models + onnxruntime outputs (rewritten
#     each time: the generator is deterministic and takes a second)
#   - .cache/vision: torchvision classifiers exported with random weights + onnxruntime outputs
#     (only where torch and torchvision are installed)
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
if ! command -v dot >/dev/null; then
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
fi
if ! command -v objdump >/dev/null || ! command -v readelf >/dev/null; then
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null
fi
LIBPYTHON=$(python3 -c "import sysconfig as s, os; print(os.path.join(s.get_config_var('LIBDIR') or '', s.get_config_var('LDLIBRARY') or ''))")
if [ ! -f "$LIBPYTHON" ] && command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev >/dev/null
fi
if ! python3 -c "import onnx, onnxruntime, onnx_ir, numpy, tokenizers, maturin, pytest; assert onnx.__version__ == '1.23.2'" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check "onnx==1.23.2" onnxruntime onnx-ir numpy tokenizers "maturin>=1.7,<2" pytest
fi
python3 scripts/fetch_models.py .cache/models
python3 scripts/gen_conformance.py .cache/onnx-conformance
python3 scripts/gen_quant_models.py .cache/quant
# The export zoo (scripts/gen_zoo.py): regenerated when its generator changes (.done holds the
# hash of the three scripts that write it).
ZOO_HASH=$(cat scripts/gen_zoo.py scripts/zoo_idioms.py examples/models/generate.py | sha256sum | cut -d' ' -f1)
if [ "$(cat .cache/zoo/.done 2>/dev/null)" != "$ZOO_HASH" ]; then
  rm -f .cache/zoo/.done
  python3 scripts/gen_zoo.py .cache/zoo >/dev/null
  echo "$ZOO_HASH" > .cache/zoo/.done
fi
# torchvision exports for tests/vision_exports.rs (scripts/export_vision.py large): only where
# torch and torchvision are installed (the tests print SKIP otherwise); regenerated when the
# script changes.
VISION_HASH=$(sha256sum scripts/export_vision.py | cut -d' ' -f1)
if python3 -c "import torch, torchvision, onnxscript" 2>/dev/null \
   && [ "$(cat .cache/vision/.done 2>/dev/null)" != "$VISION_HASH" ]; then
  rm -f .cache/vision/.done
  python3 scripts/export_vision.py large .cache/vision >/dev/null 2>&1
  echo "$VISION_HASH" > .cache/vision/.done
fi
