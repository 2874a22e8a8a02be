#!/usr/bin/env bash
# Builds and runs the GPU ring test (test_ring_gpu) and benchmark (gpu_ring_bench) on a machine with a CUDA
# GPU, nvcc, CMake and a C++ compiler but no libspdlog/libfmt (and perhaps no GoogleTest or pkg-config).
#
#   scripts/device_gpu_tests.sh --prepare
#       On a developer machine: fill .dev/ (git-ignored) from the distro packages, for carrying along:
#       .dev/include/{spdlog,fmt,CLI,nlohmann} (libspdlog-dev, libfmt-dev, libcli11-dev, nlohmann-json3-dev: the
#       benches' options and JSON) and .dev/googletest (googletest sources).
#       Also .dev/fabric/include/rdma (libfabric-dev): the device has libfabric.so.1 but no headers.
#   scripts/device_gpu_tests.sh
#       On the GPU machine, from any directory: configure with header-only spdlog/fmt from .dev/include,
#       build both targets in one go, run them. Logs go to $OUT when set, else <build dir>/logs.
#   scripts/device_gpu_tests.sh --build-python
#       Same configure; builds the uccl.ep._C module (for the interpreter `python3`) and the GPU test binaries,
#       runs nothing. Then: UCCL_EP_BUILD_DIR=<build dir> python3 scripts/launch.py ... bench/test_low_latency.py
#   scripts/device_gpu_tests.sh --python-gpu-tests
#       The --build-python build, then `python3 -m pytest tests/python/gpu -v` against it (the one-rank Buffer
#       tests and the multi-rank checks through scripts/launch.py); log and JUnit XML in the log directory.
#
# Environment: BUILD_DIR (default <repo>/build-device), DEV_DIR (default <repo>/.dev), JOBS (default nproc),
# BENCH_ARGS (extra gpu_ring_bench arguments), TEST_TIMEOUT / BENCH_TIMEOUT (seconds, default 300 / 200),
# PYTEST_TIMEOUT (seconds for all of --python-gpu-tests' pytest run, default 900), PYTEST_ARGS (extra pytest
# arguments, e.g. -k low_latency).
# Exit status: nonzero when the build, the test or the benchmark failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DIR="${DEV_DIR:-$ROOT/.dev}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-device}"
JOBS="${JOBS:-$(nproc)}"

if [[ "${1:-}" == "--prepare" ]]; then
  for f in /usr/include/spdlog/spdlog.h /usr/include/fmt/format.h /usr/src/googletest/CMakeLists.txt \
           /usr/include/rdma/fabric.h /usr/include/CLI/CLI.hpp /usr/include/nlohmann/json.hpp; do
    [[ -e "$f" ]] || { echo "missing $f: apt-get install libspdlog-dev libfmt-dev googletest libfabric-dev" \
                            "libcli11-dev nlohmann-json3-dev" >&2; exit 1; }
  done
  rm -rf "$DEV_DIR/include/spdlog" "$DEV_DIR/include/fmt" "$DEV_DIR/include/CLI" "$DEV_DIR/include/nlohmann" \
         "$DEV_DIR/googletest" "$DEV_DIR/fabric"
  mkdir -p "$DEV_DIR/include" "$DEV_DIR/fabric/include/rdma"
  cp -r /usr/include/spdlog /usr/include/fmt /usr/include/CLI /usr/include/nlohmann "$DEV_DIR/include/"
  cp -r /usr/include/rdma/fabric.h /usr/include/rdma/fi_*.h /usr/include/rdma/providers "$DEV_DIR/fabric/include/rdma/"
  cp -r /usr/src/googletest "$DEV_DIR/googletest"
  du -sh "$DEV_DIR"
  exit 0
fi

LOG_DIR="${OUT:-$BUILD_DIR/logs}"
mkdir -p "$LOG_DIR" "$BUILD_DIR"
BUILD_LOG="$LOG_DIR/build.log"
: >"$BUILD_LOG"
say() { echo "== $*" | tee -a "$BUILD_LOG"; }

[[ -e "$DEV_DIR/include/spdlog/spdlog.h" ]] || { echo "no $DEV_DIR/include/spdlog: run --prepare first" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | tee -a "$BUILD_LOG"

GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
MODE="${1:-}"
CMAKE_ARGS=(-DUCCL_EP_CUDA=ON -DUCCL_EP_SPDLOG_HEADER_ONLY=ON "-DUCCL_EP_SPDLOG_INCLUDE_DIR=$DEV_DIR/include"
            "-DUCCL_EP_FABRIC_INCLUDE_DIR=$DEV_DIR/fabric/include")
BUILD_PYTHON=0
[[ "$MODE" == "--build-python" || "$MODE" == "--python-gpu-tests" ]] && BUILD_PYTHON=1
if [[ $BUILD_PYTHON == 1 ]]; then
  PY="$(command -v python3)"
  CMAKE_ARGS+=("-DUCCL_EP_PYTHON_EXECUTABLE=$PY" "-DPython_EXECUTABLE=$PY" -DUCCL_EP_BUILD_PYTHON=ON
               "-Dpybind11_DIR=$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')")
fi

# GoogleTest: the system's when installed, else built once from the carried sources into the build dir.
# UCCL_EP_BUILD_GTEST=1 forces the latter (to try this path on a machine that has GoogleTest).
if [[ -n "${UCCL_EP_BUILD_GTEST:-}" || ( ! -e /usr/include/gtest/gtest.h && ! -e /usr/local/include/gtest/gtest.h ) ]]; then
  GTEST_PREFIX="$BUILD_DIR/_deps/gtest"
  if [[ ! -e "$GTEST_PREFIX/include/gtest/gtest.h" ]]; then
    [[ -e "$DEV_DIR/googletest/CMakeLists.txt" ]] || { echo "no GoogleTest here and none in $DEV_DIR" >&2; exit 2; }
    say "building GoogleTest from $DEV_DIR/googletest"
    { cmake -S "$DEV_DIR/googletest" -B "$BUILD_DIR/_deps/gtest-build" "${GENERATOR[@]}" -DBUILD_GMOCK=OFF \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_POSITION_INDEPENDENT_CODE=ON "-DCMAKE_INSTALL_PREFIX=$GTEST_PREFIX" &&
      cmake --build "$BUILD_DIR/_deps/gtest-build" -j "$JOBS" &&
      cmake --install "$BUILD_DIR/_deps/gtest-build"; } >>"$BUILD_LOG" 2>&1 ||
      { tail -30 "$BUILD_LOG"; exit 3; }
  fi
  CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$GTEST_PREFIX")
fi

# pkg-config is only used to look for libfabric, which these targets do not need: without it, a stand-in
# that finds nothing lets the configure go on (the fabric backend is then left out).
if ! command -v pkg-config >/dev/null; then
  mkdir -p "$BUILD_DIR/_deps/bin"
  # shellcheck disable=SC2016  # the $1 belongs to the stand-in
  printf '#!/bin/sh\n[ "$1" = --version ] && { echo 0.29.2; exit 0; }\nexit 1\n' >"$BUILD_DIR/_deps/bin/pkg-config"
  chmod +x "$BUILD_DIR/_deps/bin/pkg-config"
  CMAKE_ARGS+=("-DPKG_CONFIG_EXECUTABLE=$BUILD_DIR/_deps/bin/pkg-config")
fi

say "configure: ${CMAKE_ARGS[*]}"
cmake -S "$ROOT" -B "$BUILD_DIR" "${GENERATOR[@]}" "${CMAKE_ARGS[@]}" >>"$BUILD_LOG" 2>&1 || { tail -40 "$BUILD_LOG"; exit 3; }
TARGETS=(test_ring_gpu gpu_ring_bench)
[[ $BUILD_PYTHON == 1 ]] && TARGETS=(uccl_ep_python test_ring_gpu test_shared_memory_gpu)
# GPU memory through libfabric (FI_HMEM), where the fabric backend is configured (libfabric headers found).
[[ $BUILD_PYTHON == 1 ]] && grep -qs "test_fabric_hmem_gpu" "$BUILD_DIR/build.ninja" "$BUILD_DIR/Makefile" &&
  TARGETS+=(test_fabric_hmem_gpu)
say "build: ${TARGETS[*]}"
cmake --build "$BUILD_DIR" --target "${TARGETS[@]}" -j "$JOBS" >>"$BUILD_LOG" 2>&1 ||
  { tail -60 "$BUILD_LOG"; exit 3; }
if [[ "$MODE" == "--build-python" ]]; then
  ls "$BUILD_DIR"/src/python/_C*.so
  exit 0
fi
if [[ "$MODE" == "--python-gpu-tests" ]]; then
  say "pytest tests/python/gpu ${PYTEST_ARGS:-}"
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
  (cd "$ROOT" && UCCL_EP_BUILD_DIR="$BUILD_DIR" PYTHONUNBUFFERED=1 timeout "${PYTEST_TIMEOUT:-900}" \
    python3 -m pytest tests/python/gpu -v "--junitxml=$LOG_DIR/python_gpu_tests.xml" ${PYTEST_ARGS:-}) 2>&1 |
    tee "$LOG_DIR/python_gpu_tests.log"
  rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || echo "pytest tests/python/gpu failed (exit $rc; 124 = timed out)"
  echo "logs in $LOG_DIR"
  exit "$rc"
fi

status=0
say "test_ring_gpu"
timeout "${TEST_TIMEOUT:-300}" "$BUILD_DIR/tests/cpp/gpu/test_ring_gpu" "--gtest_output=xml:$LOG_DIR/test_ring_gpu.xml" \
  2>&1 | tee "$LOG_DIR/test_ring_gpu.log"
rc=${PIPESTATUS[0]}
[[ $rc -eq 0 ]] || { echo "test_ring_gpu failed (exit $rc; 124 = timed out)"; status=1; }

say "gpu_ring_bench ${BENCH_ARGS:-}"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
timeout "${BENCH_TIMEOUT:-200}" "$BUILD_DIR/bench/gpu_ring_bench" ${BENCH_ARGS:-} 2>&1 | tee "$LOG_DIR/gpu_ring_bench.log"
rc=${PIPESTATUS[0]}
[[ $rc -eq 0 ]] || { echo "gpu_ring_bench failed (exit $rc; 124 = timed out)"; status=1; }

echo "logs in $LOG_DIR"
exit $status
