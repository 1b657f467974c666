#!/usr/bin/env bash
# Regenerates the plan drawings of the docs: docs/img/mlp_plan.svg, docs/img/gpt2_plan.svg.
# Compiles the bundled examples for 2 devices and renders rank 0 through Graphviz.
# Needs Graphviz's `dot` (apt-get install graphviz).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
    echo "render_docs_images.sh: Graphviz 'dot' not found: install it with 'apt-get install graphviz'" >&2
    exit 1
fi
cargo build -q --bin tessera
tessera() { cargo run -q --bin tessera -- "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p docs/img

tessera compile examples/models/mlp.onnx --devices 2 --shape x=4x64 -o "$work/mlp.json" >/dev/null
tessera dot "$work/mlp.json" --format svg -o docs/img/mlp_plan.svg

# The 4-layer GPT-2: the repeated layers collapse into one "layer ×4" cluster.
tessera compile examples/models/gpt2_4l.onnx --devices 2 --shape input_ids=2x16 -o "$work/gpt2.json" >/dev/null
tessera dot "$work/gpt2.json" --format svg -o docs/img/gpt2_plan.svg

echo "wrote docs/img/mlp_plan.svg docs/img/gpt2_plan.svg"
