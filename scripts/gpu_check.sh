#!/usr/bin/env bash
# The first run of the CUDA backend on a GPU, in one script (under 7 minutes on one GPU).
#
#   scripts/gpu_check.sh --prepare [DIR]   build test binaries, tessera-run and example plans
#                                          into DIR (default target/gpu-check); no GPU needed
#   scripts/gpu_check.sh DIR               run the checks from DIR (nothing is compiled)
#   scripts/gpu_check.sh                   prepare into target/gpu-check, then run (only
#                                          where a GPU is present)
#
# Where no GPU is present (no nvidia-smi, no device, or no libcuda) a run prints
# "gpu_check: SKIP ..." and exits 0. Otherwise it prints one line per check (PASS/FAIL/SKIP
# with seconds) and a summary, keeps each check's log under $LOGS, and exits 1 if any
# check failed. docs/gpu.md explains every line.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUDGET_S=${GPU_CHECK_BUDGET_S:-400}   # later checks are skipped past this (7 min = 420 s)
PROFILE=${GPU_CHECK_PROFILE:-release}

say() { echo "gpu_check: $*"; }

# --- is there a GPU? ----------------------------------------------------------------------
no_gpu_reason() {
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi not found"; return
  fi
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "nvidia-smi finds no device ($(nvidia-smi -L 2>&1 | head -1))"; return
  fi
  if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; } \
     && ! ls /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1 \
            /usr/lib/aarch64-linux-gnu/libcuda.so.1 >/dev/null 2>&1; then
    echo "libcuda.so.1 not found"; return
  fi
}

# --- prepare: everything that needs a compiler, none of it a GPU -----------------------------
prepare() {
  local dir=$1 flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  mkdir -p "$dir/plans"
  say "prepare: building test binaries and tessera-run ($PROFILE, --features cuda)"
  # No debug info: the binaries stay small enough to copy to a GPU machine.
  [ "$PROFILE" = release ] && export CARGO_PROFILE_RELEASE_DEBUG=0
  local json
  json=$(cargo test "${flag[@]}" -p tessera-runtime --features cuda --no-run \
           --test cuda_gpu --test cuda_gpu_ranks --test cuda_gpu_system \
           --message-format=json 2>/dev/null) || { say "prepare: cargo test --no-run failed"; return 1; }
  for t in cuda_gpu cuda_gpu_ranks cuda_gpu_system; do
    local exe
    exe=$(echo "$json" | grep "\"name\":\"$t\"" | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
    [ -n "$exe" ] || { say "prepare: no executable for $t"; return 1; }
    cp "$exe" "$dir/$t"
  done
  cargo build "${flag[@]}" -q -p tessera-runtime --features cuda --bin tessera-run \
    && cargo build "${flag[@]}" -q -p tessera --bin tessera || { say "prepare: build failed"; return 1; }
  local out=target/$([ "$PROFILE" = release ] && echo release || echo debug)
  cp "$out/tessera-run" "$out/tessera" "$dir/"
  command -v strip >/dev/null && strip "$dir"/cuda_gpu* "$dir/tessera-run" "$dir/tessera" 2>/dev/null
  # Example plans at 2 and 4 devices (run on the GPU as virtual ranks).
  for model in examples/models/*.onnx; do
    local name shapes=() inputs=()
    name=$(basename "$model" .onnx)
    for npy in examples/models/"$name"/input_*.npy; do
      [ -e "$npy" ] || continue
      local in shape
      in=$(basename "$npy" .npy); in=${in#input_}
      # The npy header holds "'shape': (2, 16)": turn it into 2x16.
      shape=$(head -c 256 "$npy" | tr -d '\0' | grep -ao "'shape': ([0-9, ]*)" \
              | sed -e "s/'shape': (//" -e 's/)//' -e 's/, */x/g' -e 's/x$//')
      shapes+=("$in=$shape"); inputs+=(--input "$in=$npy")
    done
    for n in 2 4; do
      local shape_arg
      shape_arg=$(IFS=,; echo "${shapes[*]}")
      if "$dir/tessera" compile "$model" --devices "$n" --shape "$shape_arg" \
           -o "$dir/plans/${name}_n$n.json" >/dev/null 2>"$dir/plans/${name}_n$n.err"; then
        printf '%s\n' --model "$model" "${inputs[@]}" > "$dir/plans/${name}_n$n.args"
      else
        say "prepare: $name at $n devices does not compile here (see $dir/plans/${name}_n$n.err)"
      fi
    done
  done
  du -sh "$dir" | awk '{print "gpu_check: prepare: " $1 " in " $2}'
}

# --- run -------------------------------------------------------------------------------------
PASS=0; FAIL=0; SKIPPED=0; START=$SECONDS
LOGS=""

# check LABEL TIMEOUT CMD...: runs CMD, prints one line. A GPU test that printed
# "skipping:" on a machine with a GPU is a failure (a library is missing).
check() {
  local label=$1 limit=$2; shift 2
  if (( SECONDS - START > BUDGET_S )); then
    say "SKIP $label (time budget of ${BUDGET_S}s spent)"; SKIPPED=$((SKIPPED + 1)); return
  fi
  local log
  log="$LOGS/$(echo "$label" | tr -c 'A-Za-z0-9_\n' '_').log"
  local t0=$SECONDS rc
  timeout "$limit" "$@" >"$log" 2>&1; rc=$?
  local dt=$((SECONDS - t0))
  if [ $rc -eq 124 ]; then
    say "FAIL $label (timed out after ${limit}s; log $log)"; FAIL=$((FAIL + 1))
  elif grep -q 'skipping:' "$log"; then
    say "FAIL $label (skipped on a GPU machine: $(grep -m1 -o 'skipping:.*' "$log" | cut -c1-200))"
    FAIL=$((FAIL + 1))
  elif [ $rc -ne 0 ]; then
    say "FAIL $label (exit $rc, ${dt}s; log $log)"; FAIL=$((FAIL + 1))
    { grep -m3 -E 'panicked|FAILED|error' "$log" || tail -n 2 "$log"; } \
      | sed 's/^/gpu_check:   /' | cut -c1-300
  else
    say "PASS $label (${dt}s)"; PASS=$((PASS + 1))
  fi
}

run_checks() {
  local dir=$1
  LOGS="$dir/logs"; mkdir -p "$LOGS"
  say "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
                   --format=csv,noheader 2>&1 | head -1)"
  say "nvidia-smi: $(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1)"
  # Where the CUDA libraries come from (cuda::libs search; never fails).
  "$dir/cuda_gpu_system" --exact report_libraries --nocapture 2>/dev/null \
    | grep '^library' | sed 's/^/gpu_check: /' | cut -c1-300
  local t=(--test-threads=1 --nocapture --exact)
  check "kernels vs CPU kernels, cuBLAS shapes" 150 "$dir/cuda_gpu" "${t[@]}" ops_match_the_cpu_kernels
  check "single-rank device runs a plan" 60 "$dir/cuda_gpu" "${t[@]}" a_single_rank_device_runs_an_unsplit_plan
  check "virtual ranks 2/3/4/8 vs reference executor" 150 "$dir/cuda_gpu" "${t[@]}" virtual_ranks_match_the_reference_executor
  for n in 3 4 8; do
    check "virtual ranks $n: shared results outlive readers" 90 "$dir/cuda_gpu_ranks" "${t[@]}" "shared_results_outlive_every_reader_at_${n}_ranks"
  done
  local san
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$san" ]; then
    check "compute-sanitizer memcheck, virtual ranks 3" 150 env TESSERA_RANKS_ROUNDS=2 \
      "$san" --tool memcheck --error-exitcode 9 "$dir/cuda_gpu_ranks" "${t[@]}" shared_results_outlive_every_reader_at_3_ranks
  else
    say "SKIP compute-sanitizer memcheck (compute-sanitizer not installed)"; SKIPPED=$((SKIPPED + 1))
  fi
  check "NCCL one rank, every collective" 90 "$dir/cuda_gpu_system" "${t[@]}" one_rank_nccl_runs_every_collective
  for args in "$dir"/plans/*.args; do
    [ -e "$args" ] || continue
    local plan name
    plan=${args%.args}.json; name=$(basename "$plan" .json)
    mapfile -t a < "$args"
    check "example $name on cuda --check" 60 "$dir/tessera-run" "$plan" --backend cuda --check "${a[@]}"
  done
  check "GEMM-bound layer timing" 120 "$dir/cuda_gpu_system" "${t[@]}" --ignored gemm_layer_against_cublas
  grep -h '^gemm layer' "$LOGS"/GEMM*.log 2>/dev/null | sed 's/^/gpu_check: /'
  say "summary: $PASS passed, $FAIL failed, $SKIPPED skipped in $((SECONDS - START))s (logs in $LOGS)"
  [ $FAIL -eq 0 ]
}

case "${1:-}" in
  --prepare)
    prepare "${2:-$ROOT/target/gpu-check}"; exit $? ;;
  -h|--help)
    sed -n 2,14p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

why=$(no_gpu_reason)
if [ -n "$why" ] && [ "${GPU_CHECK_FORCE:-0}" != 1 ]; then
  say "SKIP no GPU here ($why); nothing was run"
  exit 0
fi
DIR=${1:-}
if [ -z "$DIR" ]; then
  DIR=$ROOT/target/gpu-check
  prepare "$DIR" || exit 1
fi
DIR=$(cd "$DIR" && pwd) || { say "no directory $1"; exit 1; }
for b in cuda_gpu cuda_gpu_ranks cuda_gpu_system tessera-run; do
  [ -x "$DIR/$b" ] || { say "FAIL $DIR/$b missing: run scripts/gpu_check.sh --prepare $DIR first"; exit 1; }
done
run_checks "$DIR"
