#!/usr/bin/env bash
# The test command: prepares data (scripts/setup.sh), then runs every test of the workspace,
# the CUDA feature included (GPU tests skip with a printed reason when no GPU is present).
# The conformance harness prints its pass/fail/skip counts. Then the Python package: built
# and installed from this tree (`pip install .`, maturin; the dev profile, which reuses
# cargo test's build, instead of a release build) and its pytest suite (python/tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --features tessera-runtime/cuda -- --nocapture
# The adversarial campaign of issue 13 against the binaries just built: about 130 cases,
# about 40 s on a 2-core machine, so the full run (python3 scripts/campaign.py --quick skips
# the slow cases). Non-zero exit when any case panics, aborts, hangs, runs out of memory,
# answers wrong or escapes (see docs/reliability.md, "Campaign").
cargo build --workspace --bins --features tessera-runtime/cuda
python3 scripts/campaign.py
# The release runtime's wide loops must not fall back to the baseline build (a library call
# per FMA: 65x slower Sigmoid/Tanh/SiLU); checked on the disassembly, not timed.
cargo build --release -p tessera-runtime --bin tessera-run
python3 scripts/check_wide_loops.py target/release/tessera-run
python3 -m pip install -q --disable-pip-version-check --no-build-isolation \
  --config-settings=build-args="--profile dev" .
(cd python/tests && python3 -m pytest -q)
