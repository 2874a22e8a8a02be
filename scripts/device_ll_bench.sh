#!/usr/bin/env bash
# Runs bench/test_low_latency.py (the figures) on the GPU machine for a list of (ranks, ranks per node) pairs, all
# ranks on the visible GPU(s) through scripts/launch.py (MPS when ranks share a GPU). Assumes the module is built
# (scripts/device_gpu_tests.sh --build-python). Output per configuration in $OUT (or ./ll-logs). The correctness
# checks take the same arguments: tests/python/gpu/low_latency_checks.py (scripts/device_gpu_tests.sh
# --python-gpu-tests runs them).
#
#   scripts/device_ll_bench.sh "2:2 2:1 4:4" [extra test_low_latency.py arguments...]
#
# Proxied configurations also print the transport floor (bench/ll_floor.py); pass the one-node figures of the same
# ranks as --nvlink-us DISPATCH,COMBINE for the ratio to floor + NVLink-path time:
#   scripts/device_ll_bench.sh "2:2" && scripts/device_ll_bench.sh "2:1" --nvlink-us <dispatch us>,<combine us>
#
# Environment: BUILD_DIR (default <repo>/build-device), TIMEOUT per configuration (default 240 s); proxied
# configurations run UCCL_EP_NUM_PROXY_THREADS proxy threads per rank (default 1 here: 8 ranks x 4 threads would
# oversubscribe a 16-core machine).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export UCCL_EP_BUILD_DIR="${BUILD_DIR:-$ROOT/build-device}" PYTHONUNBUFFERED=1
export UCCL_EP_NUM_PROXY_THREADS="${UCCL_EP_NUM_PROXY_THREADS:-1}" UCCL_LOG_LEVEL="${UCCL_LOG_LEVEL:-warn}"
LOG_DIR="${OUT:-$ROOT/ll-logs}"
mkdir -p "$LOG_DIR"
configs=$1
shift
status=0
for c in $configs; do
  n=${c%%:*} k=${c##*:}
  log="$LOG_DIR/ll_${n}ranks_${k}pernode.log"
  cmd=(python3 "$ROOT/scripts/launch.py" --nproc "$n" --ranks-per-node "$k" --timeout "${TIMEOUT:-240}" --
       "$ROOT/bench/test_low_latency.py" "$@")
  echo "== ${cmd[*]}" | tee "$log"
  "${cmd[@]}" >>"$log" 2>&1
  rc=$?
  grep -E "topology:|sanity check passed|^\[rank 0\] \| [0-9]|transport floor over|^\[rank 0\] \| (dispatch|combine) \||RDMA buffer of|Error|error:|failed" "$log" |
    grep -v "^\[rank .\] \[rank.\]:   " | tail -12
  [[ $rc -eq 0 ]] || { echo "== ${n} ranks, ${k} per node: FAILED (exit $rc)"; status=1; }
done
exit $status
