#!/usr/bin/env bash
# Builds the uccl-ep wheel (and the deep_ep alias wheel) for one target into an output folder. It is the script
# the docker images of docker/wheel-<target>.Dockerfile run (build.sh --wheel <target>), and it runs the same way
# directly on a host that has the target's toolkit (build.sh --wheel <target> --no-docker; that is how CI builds).
#
#   scripts/build_wheel.sh cu12|cu13|rocm|cpu [OUT_DIR]
#
# Environment:
#   UCCL_EP_WHEEL_PYTHONS  interpreters to build for, space-separated (default: every /opt/python/cp31{0,1,2,3}-*
#                          of a manylinux image, else python3). One wheel per interpreter.
#   UCCL_EP_SPDLOG_INCLUDE_DIR  folder with spdlog/ and fmt/ headers (default: the first of /usr/include,
#                          /usr/local/include that has both): the module uses them header-only, links neither.
#   UCCL_EP_CUDA_ARCHS / TORCH_CUDA_ARCH_LIST, UCCL_EP_ROCM_ARCHS / PYTORCH_ROCM_ARCH: GPU architectures (setup.py).
# What comes out: <OUT_DIR>/uccl_ep-<version>+<target>-cpXY-cpXY-<platform>.whl per interpreter and
# <OUT_DIR>/uccl_ep_deep_ep-<version>-py3-none-any.whl. auditwheel, where installed (manylinux images), repairs
# each wheel to its manylinux tag, excluding the CUDA driver (never linked anyway) and the HIP runtime; without it the platform tag stays
# linux_<arch>. Every wheel's native module is checked to link no torch, CUDA driver, spdlog, fmt, libfabric or
# libibverbs library.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=${1:-}
out=${2:-${REPO}/dist}
case "${target}" in
  cu12 | cu13 | rocm | cpu) ;;
  *) echo "usage: scripts/build_wheel.sh cu12|cu13|rocm|cpu [OUT_DIR]" >&2; exit 2 ;;
esac
mkdir -p "${out}"
out=$(cd "${out}" && pwd)

if [[ -z "${UCCL_EP_SPDLOG_INCLUDE_DIR:-}" ]]; then
  for d in /usr/include /usr/local/include; do
    if [[ -d "${d}/spdlog" && -d "${d}/fmt" ]]; then UCCL_EP_SPDLOG_INCLUDE_DIR=${d}; break; fi
  done
fi
[[ -n "${UCCL_EP_SPDLOG_INCLUDE_DIR:-}" ]] || { echo "build_wheel.sh: no spdlog/ and fmt/ headers found; set UCCL_EP_SPDLOG_INCLUDE_DIR" >&2; exit 1; }
export UCCL_EP_SPDLOG_INCLUDE_DIR UCCL_EP_WHEEL_TARGET=${target}

pythons=${UCCL_EP_WHEEL_PYTHONS:-}
if [[ -z "${pythons}" ]]; then
  for p in /opt/python/cp310-cp310 /opt/python/cp311-cp311 /opt/python/cp312-cp312 /opt/python/cp313-cp313; do
    [[ -x "${p}/bin/python" ]] && pythons+=" ${p}/bin/python"
  done
  pythons=${pythons:-$(command -v python3)}
fi

work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
for py in ${pythons}; do
  echo "== ${py}: uccl-ep ${target}"
  rm -rf "${work}/raw" && mkdir -p "${work}/raw"
  # A fresh build tree per interpreter: the module is built for the interpreter running setup.py.
  rm -rf "${REPO}/build/lib."* "${REPO}/build/temp."* "${REPO}/build/bdist."* 2>/dev/null || true
  "${py}" -m pip wheel --no-build-isolation --no-deps -w "${work}/raw" "${REPO}"
  for whl in "${work}/raw"/uccl_ep-*.whl; do
    if command -v auditwheel >/dev/null 2>&1; then
      # libamdhip64 stays the ROCm install's (torch's ROCm wheels bring their own): two HIP runtimes in one process
      # would not share a device context.
      auditwheel repair --exclude libcuda.so.1 --exclude 'libamdhip64.so*' -w "${out}" "${whl}"
    else
      cp "${whl}" "${out}/"
    fi
  done
done
first=${pythons# }
first=${first%% *}
echo "== ${first}: the deep_ep alias"
"${first}" -m pip wheel --no-build-isolation --no-deps -w "${out}" "${REPO}/packaging/deep_ep"

status=0
for whl in "${out}"/uccl_ep-*+"${target}"-*.whl; do
  "${first}" "${REPO}/scripts/check_wheel.py" "${whl}" || status=1
done
ls -l "${out}"
exit ${status}
