#!/usr/bin/env bash
# The normal-mode device run in one go (the device machine goes cold between calls): build, the shared-memory
# GPU test, the normal-mode fault check, then bench/test_intranode.py (the figures) for each
# "ranks:ranks_per_node:flags" entry, all ranks on the visible GPU(s) under MPS. Logs in $OUT (or
# ./intranode-logs); a failing step does not stop the next one; the exit status says whether any failed. The
# correctness checks take the same arguments: tests/python/gpu/intranode_checks.py (scripts/device_gpu_tests.sh
# --python-gpu-tests runs them).
#
#   scripts/device_intranode.sh "2:2 4:4 8:8 12:4:mnnvl 16:8:mnnvl" [extra test_intranode.py arguments...]
#
# "mnnvl" runs the entry with UCCL_EP_NORMAL_MNNVL=1: every rank an NVLink peer although the emulated node
# layout says otherwise, so the nvl buffers travel as POSIX-fd handles (fabric where the GPU has it).
# Environment: BUILD_DIR (default <repo>/build-device), TIMEOUT_<ranks> per entry (default 120 s),
# SKIP_BUILD=1, SKIP_EXTRA=1 (no shared-memory test / fault check).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_DIR="${OUT:-$ROOT/intranode-logs}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$LOG_DIR"
export UCCL_EP_BUILD_DIR="$BUILD_DIR" PYTHONUNBUFFERED=1 UCCL_LOG_LEVEL="${UCCL_LOG_LEVEL:-warn}"
status=0
step() {  # step <name> <timeout> <command...>
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name: $*" >"$LOG_DIR/$name.log"
  timeout "$limit" "$@" >>"$LOG_DIR/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG_DIR/$name.log"
  [[ $rc -eq 0 ]] || status=1
  return $rc
}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  OUT="$LOG_DIR" step build 300 bash "$ROOT/scripts/device_gpu_tests.sh" --build-python || { tail -40 "$LOG_DIR/build.log"; exit 1; }
fi
configs=$1
shift
if [[ "${SKIP_EXTRA:-0}" != 1 ]]; then
  bin="$BUILD_DIR/tests/cpp/gpu/test_shared_memory_gpu"
  step shared_memory_gpu 40 "$bin" && grep -E "^\[  (OK|SKIPPED|FAILED) " "$LOG_DIR/shared_memory_gpu.log"
  UCCL_EP_TIMEOUT_SECS=3 step faults 60 python3 "$ROOT/scripts/launch.py" --nproc 4 --timeout 55 -- \
    "$ROOT/bench/test_intranode_faults.py"
  grep -E "raised after|all checks passed|Error" "$LOG_DIR/faults.log" | head -5
fi
for c in $configs; do
  IFS=: read -r n k flag <<<"$c"
  limit_var="TIMEOUT_$n"
  env_args=()
  [[ "$flag" == mnnvl ]] && env_args=(env UCCL_EP_NORMAL_MNNVL=1)
  step "intranode_${n}r_${k}pn${flag:+_$flag}" "${!limit_var:-120}" "${env_args[@]}" python3 "$ROOT/scripts/launch.py" \
    --nproc "$n" --ranks-per-node "$k" --timeout "$(( ${!limit_var:-120} - 5 ))" -- "$ROOT/bench/test_intranode.py" "$@"
  grep -E "Error|error:|failed|FAIL" "$LOG_DIR/intranode_${n}r_${k}pn${flag:+_$flag}.log" | head -5
  tail -14 "$LOG_DIR/intranode_${n}r_${k}pn${flag:+_$flag}.log"
done
exit $status
