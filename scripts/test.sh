#!/usr/bin/env bash
# The test command: prepares data (scripts/setup.sh), then runs every test of the workspace,
# the CUDA feature included (GPU tests skip with a printed reason when no GPU is present).
# The conformance harness prints its pass/fail/skip counts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --features tessera-runtime/cuda -- --nocapture
