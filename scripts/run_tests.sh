#!/usr/bin/env bash
# The one test command: builds Release and ThreadSanitizer, runs every CTest suite in both (GPU-labelled tests
# only where a GPU is present), the HIP compile check and the HIP build of _C (build.sh --hip, up to the link of
# the module against libamdhip64; nothing runs it) where hipcc is installed, and pytest on tests/python with the
# distribution's Python. Exits non-zero when any phase fails; every phase runs regardless.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
Usage: scripts/run_tests.sh [options]

Options:
  --tsan-labels REGEX  CTest labels to run under ThreadSanitizer (default: all but gpu; the labels
                       ring and proxy always run first, as their own pass)
  --no-tsan            skip the ThreadSanitizer build and tests
  --build-root DIR     where build/ and build-tsan/ go (default: $UCCL_EP_BUILD_ROOT, else the repository)
  --jobs N             compile jobs and parallel tests (default: number of cores)
  -h, --help           this text

Environment: UCCL_EP_TEST_TIMEOUT (seconds per test without its own timeout, default 600).
EOF
}

build_root=${UCCL_EP_BUILD_ROOT:-${REPO}}
jobs=$(nproc)
tsan=1
tsan_labels=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tsan-labels) [[ $# -ge 2 ]] || { echo "run_tests.sh: --tsan-labels needs a regex" >&2; exit 2; }
                   tsan_labels=$2; shift ;;
    --no-tsan) tsan=0 ;;
    --build-root) [[ $# -ge 2 ]] || { echo "run_tests.sh: --build-root needs a directory" >&2; exit 2; }
                  build_root=$2; shift ;;
    --jobs | -j) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "run_tests.sh: --jobs needs a positive number" >&2; exit 2; }
                 jobs=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run_tests.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

release_dir=${build_root}/build
tsan_dir=${build_root}/build-tsan
hip_dir=${build_root}/build-hip
timeout=${UCCL_EP_TEST_TIMEOUT:-600}
python=/usr/bin/python3  # owns Debian's python3-pytest and python3-numpy; a pyenv python3 on PATH does not
log_dir=${build_root}/build-logs  # matches .gitignore's /build*/
mkdir -p "${log_dir}"

# ---- bookkeeping: one line per phase in the final summary -------------------------------------------------
results=()
ctest_lines=()
failed=0
record() {  # record NAME STATUS SECONDS
  results+=("$(printf '  %-28s %-8s %5ss' "$1" "$2" "$3")")
  [[ "$2" == FAIL ]] && failed=1
  return 0
}
phase() {  # phase NAME COMMAND...: runs COMMAND, records pass/fail and time
  local name=$1 start rc
  shift
  echo
  echo "==== ${name} ===="
  start=$SECONDS
  "$@"
  rc=$?
  record "${name}" "$([[ ${rc} -eq 0 ]] && echo ok || echo FAIL)" $((SECONDS - start))
  return ${rc}
}

# ---- what this machine offers -----------------------------------------------------------------------------
have_gpu=0
if compgen -G '/dev/nvidia[0-9]*' >/dev/null || [[ -e /dev/kfd ]]; then
  have_gpu=1
fi
gpu_filter=()
[[ ${have_gpu} -eq 1 ]] || gpu_filter=(-LE gpu)

run_ctest() {  # run_ctest BUILD_DIR LOG [ctest label arguments...]
  local dir=$1 log=$2 rc
  shift 2
  local wrap=()
  # ThreadSanitizer (gcc 12) cannot map its shadow when the kernel randomises more than 28 bits of mmap.
  if [[ "${dir}" == "${tsan_dir}" && $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0) -gt 28 ]]; then
    wrap=(setarch "$(uname -m)" -R)
  fi
  (cd "${dir}" && "${wrap[@]}" ctest --output-on-failure --no-tests=error -j "${jobs}" --timeout "${timeout}" "$@") \
    2>&1 | tee "${log}"
  rc=${PIPESTATUS[0]}
  local summary
  summary=$(grep -E '^[0-9]+% tests passed' "${log}" | tail -n1)
  ctest_lines+=("$(printf '  %-28s %s' "$(basename "${log}" .log)" "${summary:-no summary (see ${log})}")")
  return "${rc}"
}

hip_check() {  # built with ALL by the Release build; rebuilt here only to report it as a phase of its own
  (cd "${release_dir}" && cmake --build . --target hip_check)
}

hip_build() {  # the whole package for HIP, up to _C: kernels through hipcc, the runtime and _C linked to libamdhip64
  "${REPO}/build.sh" --hip --build-dir "${hip_dir}" --jobs "${jobs}" -- -DUCCL_EP_BUILD_TESTS=OFF \
    -DUCCL_EP_BUILD_BENCH=OFF || return
  local so
  so=$(find "${hip_dir}/src/python" -maxdepth 1 -name '_C*.so' | head -n1)
  [[ -n "${so}" ]] || { echo "HIP build: no _C module in ${hip_dir}/src/python" >&2; return 1; }
  readelf -d "${so}" | grep -q 'NEEDED.*libamdhip64' || { echo "HIP build: ${so} does not link libamdhip64" >&2; return 1; }
  echo "HIP build: ${so} links libamdhip64"
}

pytest_phase() {
  local ntests rc
  ntests=$(find "${REPO}/tests/python" -type f \( -name 'test_*.py' -o -name '*_test.py' \) | wc -l)
  (cd "${REPO}" && UCCL_EP_BUILD_DIR="${release_dir}" "${python}" -m pytest -p no:cacheprovider -q tests/python)
  rc=$?
  if [[ ${rc} -eq 5 && ${ntests} -eq 0 ]]; then
    echo "pytest: tests/python holds no test files yet"
    return 0
  fi
  return "${rc}"
}

start_all=$SECONDS
echo "uccl-ep tests: build root ${build_root}, ${jobs} jobs, GPU $([[ ${have_gpu} -eq 1 ]] && echo present || echo 'absent (gpu-labelled tests skipped)')"

# ---- Release ----------------------------------------------------------------------------------------------
if phase "build Release" "${REPO}/build.sh" --build-dir "${release_dir}" --jobs "${jobs}"; then
  if command -v hipcc >/dev/null 2>&1 && [[ -f "${REPO}/tests/cpp/gpu/ring_device_hip_check.hip" ]]; then
    phase "HIP compile check (gfx90a)" hip_check
  else
    record "HIP compile check" skipped 0
  fi
  if command -v hipcc >/dev/null 2>&1; then
    phase "HIP build of _C (gfx90a)" hip_build
  else
    record "HIP build of _C" skipped 0
  fi
  phase "ctest Release" run_ctest "${release_dir}" "${log_dir}/ctest-release.log" "${gpu_filter[@]}"
else
  record "ctest Release" FAIL 0
fi

# ---- ThreadSanitizer --------------------------------------------------------------------------------------
if [[ ${tsan} -eq 1 ]]; then
  if phase "build TSan" "${REPO}/build.sh" --tsan --build-dir "${tsan_dir}" --jobs "${jobs}"; then
    export TSAN_OPTIONS="second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
    phase "ctest TSan ring|proxy" run_ctest "${tsan_dir}" "${log_dir}/ctest-tsan-ring-proxy.log" -L 'ring|proxy' -LE gpu
    rest=(-LE 'ring|proxy|gpu')
    [[ -z "${tsan_labels}" ]] || rest=(-L "${tsan_labels}" "${rest[@]}")
    if (cd "${tsan_dir}" && ctest -N "${rest[@]}" | grep -qE '^Total Tests: [1-9]'); then
      phase "ctest TSan ${tsan_labels:-other labels}" run_ctest "${tsan_dir}" "${log_dir}/ctest-tsan-other.log" "${rest[@]}"
    fi
  else
    record "ctest TSan" FAIL 0
  fi
else
  record "TSan" skipped 0
fi

# ---- Python -----------------------------------------------------------------------------------------------
if [[ -d "${REPO}/tests/python" ]]; then
  phase "pytest tests/python" pytest_phase
else
  record "pytest" "skipped" 0
  echo
  echo "pytest: no tests/python folder yet"
fi

# ---- summary ----------------------------------------------------------------------------------------------
echo
echo "==== summary ($((SECONDS - start_all))s) ===="
printf '%s\n' "${results[@]}"
if [[ ${#ctest_lines[@]} -gt 0 ]]; then
  echo "ctest:"
  printf '%s\n' "${ctest_lines[@]}"
fi
if [[ ${failed} -ne 0 ]]; then
  echo "FAILED (logs in ${log_dir})"
  exit 1
fi
echo "all passed"
