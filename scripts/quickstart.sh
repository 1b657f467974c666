#!/usr/bin/env bash
# The main job on a bundled example: compile a 4-layer GPT-2-style model for 2 devices,
# run the plan on 2 CPU devices, and check it against the unpartitioned reference.
# No Python needed: the example models are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-examples/models/gpt2_4l.onnx}
N=${2:-2}
name=$(basename "$MODEL" .onnx)
cargo build --release -q -p tessera -p tessera-runtime --bins
mkdir -p target/quickstart
target/release/tessera compile "$MODEL" --devices "$N" --shape input_ids=2x16 -o "target/quickstart/$name.plan.json"
target/release/tessera-run "target/quickstart/$name.plan.json" \
  --input "input_ids=examples/models/$name/input_input_ids.npy" \
  --output target/quickstart/out --check --stats
