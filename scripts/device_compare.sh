#!/usr/bin/env bash
# Before/after figures on the GPU machine in one call: builds this tree and an earlier one (a `git archive` of the
# commit to compare with, unpacked at BASE), then runs bench/profile_kernels.py (per-kernel GPU time, wall time per
# call, copy reference) for both modes with both trees, one rank per GPU and two ranks sharing GPU 0 under MPS.
# The profiler script is this tree's; only the package under test changes (PYTHONPATH and UCCL_EP_BUILD_DIR).
#
#   git archive <commit> | (mkdir -p .baseline && tar -x -C .baseline)   # here, then carry .baseline and .dev
#   scripts/device_compare.sh [.baseline] [profile_kernels.py arguments...]
#
# Logs in $OUT (or ./compare-logs). Environment: GPUS (default "2 1": the --gpus values to run).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$(cd "${1:-$ROOT/.baseline}" && pwd)"
shift || true
LOG_DIR="${OUT:-$ROOT/compare-logs}"
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 UCCL_LOG_LEVEL="${UCCL_LOG_LEVEL:-warn}"
DEV_DIR="$ROOT/.dev" BUILD_DIR="$ROOT/build-device" bash "$ROOT/scripts/device_gpu_tests.sh" --build-python \
  >"$LOG_DIR/build_after.log" 2>&1 &
DEV_DIR="$ROOT/.dev" BUILD_DIR="$ROOT/build-base" bash "$BASE/scripts/device_gpu_tests.sh" --build-python \
  >"$LOG_DIR/build_before.log" 2>&1 &
wait %1 || { tail -30 "$LOG_DIR/build_after.log"; exit 3; }
wait %2 || { tail -30 "$LOG_DIR/build_before.log"; exit 3; }
status=0
for gpus in ${GPUS:-2 1}; do
  for mode in ll normal; do
    for which in before after; do
      if [[ $which == before ]]; then tree=$BASE build=$ROOT/build-base; else tree=$ROOT build=$ROOT/build-device; fi
      PYTHONPATH="$tree/python" UCCL_EP_BUILD_DIR="$build" timeout 150 python3 "$ROOT/scripts/launch.py" --nproc 2 \
        --gpus "$gpus" --timeout 140 -- "$ROOT/bench/profile_kernels.py" --mode "$mode" \
        --label "$which, $gpus GPU(s):" "$@" 2>&1 | grep -v "^\[rank 1\]" || status=1
    done
  done
done | tee "$LOG_DIR/profiles.log"
exit $status
