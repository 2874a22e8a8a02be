#!/usr/bin/env bash
# Configures and builds uccl-ep with CMake + Ninja.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
Usage: ./build.sh [options] [-- extra cmake configure arguments]

Options:
  --debug           Debug build (default: Release)
  --tsan            ThreadSanitizer build (UCCL_EP_SANITIZE=thread; CUDA off)
  --asan            AddressSanitizer + UBSan build (UCCL_EP_SANITIZE=address)
  --no-cuda         do not build CUDA code even when nvcc is found
  --hip             build the GPU layers (kernels, runtime, _C) for HIP with hipcc, for UCCL_EP_HIP_ARCH
                    (default gfx90a; -- -DUCCL_EP_HIP_ARCH='gfx90a;gfx942' for more), linking libamdhip64
  --build-dir DIR   build directory
  --jobs N          parallel compile jobs (default: number of cores)
  --clean           remove the build directory first
  --wheel TARGET    build the wheels for TARGET (cu12, cu13, rocm, cpu) into dist/: uccl-ep, one per CPython
                    3.10-3.13, and the deep_ep alias, inside the image of docker/wheel-TARGET.Dockerfile
                    (manylinux_2_28 with the target's toolkit); scripts/build_wheel.sh is what runs in it
  --no-docker       with --wheel: run scripts/build_wheel.sh on this host instead (it needs the target's
                    toolkit; wheels for this host's python3, tagged linux_<arch> unless auditwheel is installed)
  -h, --help        this text

Build directories, under $UCCL_EP_BUILD_ROOT (default: the repository root) unless --build-dir is given:
  build/ (Release), build-debug/, build-tsan/, build-asan/, build-hip/ and build-hip-debug/ (--hip)
Sanitizer builds use the Debug configuration (assertions on; the sanitizer flags set -O1).
CUDA is built when nvcc is found (/usr/local/cuda/bin/nvcc or PATH); the HIP compile check runs when
hipcc is found. --hip builds the whole package for HIP instead (no sanitizer flavour).
EOF
}

build_type=Release
sanitize=""
cuda=auto
gpu=cuda
build_dir=""
jobs=""
clean=0
wheel=""
docker=1
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) build_type=Debug ;;
    --tsan) [[ -z "${sanitize}" || "${sanitize}" == thread ]] || { echo "build.sh: --tsan and --asan exclude each other" >&2; exit 2; }
            sanitize=thread ;;
    --asan) [[ -z "${sanitize}" || "${sanitize}" == address ]] || { echo "build.sh: --tsan and --asan exclude each other" >&2; exit 2; }
            sanitize=address ;;
    --no-cuda) cuda=OFF ;;
    --hip) gpu=hip ;;
    --build-dir) [[ $# -ge 2 ]] || { echo "build.sh: --build-dir needs a directory" >&2; exit 2; }
                 build_dir=$2; shift ;;
    --build-dir=*) build_dir=${1#*=} ;;
    --jobs | -j) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "build.sh: --jobs needs a positive number" >&2; exit 2; }
                 jobs=$2; shift ;;
    --jobs=*) jobs=${1#*=}; [[ "${jobs}" =~ ^[1-9][0-9]*$ ]] || { echo "build.sh: --jobs needs a positive number" >&2; exit 2; } ;;
    --clean) clean=1 ;;
    --wheel) [[ $# -ge 2 ]] || { echo "build.sh: --wheel needs a target (cu12, cu13, rocm, cpu)" >&2; exit 2; }
             wheel=$2; shift ;;
    --wheel=*) wheel=${1#*=} ;;
    --no-docker) docker=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [[ -n "${wheel}" ]]; then
  case "${wheel}" in
    cu12 | cu13 | rocm | cpu) ;;
    *) echo "build.sh: --wheel ${wheel}: expected cu12, cu13, rocm or cpu" >&2; exit 2 ;;
  esac
  if [[ ${docker} -eq 0 ]]; then
    exec "${REPO}/scripts/build_wheel.sh" "${wheel}" "${REPO}/dist"
  fi
  command -v docker >/dev/null 2>&1 || { echo "build.sh: --wheel needs docker (or --no-docker on a host with the toolkit)" >&2; exit 1; }
  docker info >/dev/null 2>&1 || { echo "build.sh: no docker daemon is reachable; start one, or run with --no-docker on a host with the ${wheel} toolkit" >&2; exit 1; }
  image="uccl-ep-wheel-${wheel}"
  docker build -f "${REPO}/docker/wheel-${wheel}.Dockerfile" -t "${image}" "${REPO}/docker"
  exec docker run --rm -v "${REPO}:/src" -w /src "${image}" scripts/build_wheel.sh "${wheel}" /src/dist
fi

for tool in cmake ninja; do
  command -v "${tool}" >/dev/null 2>&1 || { echo "build.sh: '${tool}' not found; run ./install_deps.sh" >&2; exit 1; }
done

if [[ -n "${sanitize}" ]]; then
  [[ "${gpu}" == cuda ]] || { echo "build.sh: --hip builds no sanitizer flavour" >&2; exit 2; }
  build_type=Debug
fi
if [[ -z "${build_dir}" ]]; then
  root=${UCCL_EP_BUILD_ROOT:-${REPO}}
  case "${sanitize}:${build_type}" in
    thread:*) build_dir=${root}/build-tsan ;;
    address:*) build_dir=${root}/build-asan ;;
    :Debug) [[ "${gpu}" == hip ]] && build_dir=${root}/build-hip-debug || build_dir=${root}/build-debug ;;
    *) [[ "${gpu}" == hip ]] && build_dir=${root}/build-hip || build_dir=${root}/build ;;
  esac
fi
jobs=${jobs:-$(nproc)}

if [[ ${clean} -eq 1 && -d "${build_dir}" ]]; then
  echo "[build] removing ${build_dir}"
  rm -rf "${build_dir}"
fi
# A directory configured with another generator cannot be reused; say so instead of failing obscurely.
if [[ -f "${build_dir}/CMakeCache.txt" ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "${build_dir}/CMakeCache.txt"; then
  echo "build.sh: ${build_dir} was configured with another generator; rerun with --clean" >&2
  exit 1
fi

echo "[build] ${build_dir}: ${build_type}${sanitize:+, sanitizer=${sanitize}}, GPU=${gpu}$([[ "${gpu}" == cuda ]] && echo ", CUDA=${cuda}"), jobs=${jobs}"
cmake -S "${REPO}" -B "${build_dir}" -G Ninja \
  -DCMAKE_BUILD_TYPE="${build_type}" \
  -DUCCL_EP_SANITIZE="${sanitize}" \
  -DUCCL_EP_GPU="${gpu}" \
  -DUCCL_EP_CUDA="${cuda}" \
  "${extra[@]}"
cmake --build "${build_dir}" --parallel "${jobs}"
echo "[build] done: ${build_dir}"
