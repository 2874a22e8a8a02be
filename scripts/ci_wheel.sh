#!/usr/bin/env bash
# CI proves the wheel (run by .ci/run after the tests): builds the cu13 wheel and the deep_ep alias with
# scripts/build_wheel.sh on this host (nvcc from /usr/local/cuda; no docker daemon here), installs both into a fresh
# virtual environment (system site packages for torch only), and, with no GPU and from outside the source tree:
# imports uccl.ep and its native module, checks the alias, the version, and (scripts/check_wheel.py, run by
# build_wheel.sh) the tags and that the module links no torch, CUDA driver, spdlog, fmt, libfabric or libibverbs.
#   scripts/ci_wheel.sh [OUT_DIR]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=${1:-$(mktemp -d)}
py=/usr/bin/python3
[[ -x /usr/local/cuda/bin/nvcc ]] && export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
UCCL_EP_WHEEL_PYTHONS=${py} "${REPO}/scripts/build_wheel.sh" cu13 "${out}"

venv=$(mktemp -d)/venv
"${py}" -m venv --system-site-packages "${venv}"
"${venv}/bin/python" -m pip install --no-index --no-deps "${out}"/uccl_ep-*+cu13-*.whl "${out}"/uccl_ep_deep_ep-*.whl
cd "$(mktemp -d)"  # away from the source tree: only the installed package can be imported
CUDA_VISIBLE_DEVICES="" "${venv}/bin/python" - <<'PY'
import importlib.metadata as md
import os

import torch
import uccl.ep as ep
import deep_ep
from uccl.ep import _C

assert ep._C is _C and _C.has_cuda(), "the cu13 module must be built with CUDA"
assert ep.Buffer is deep_ep.Buffer and deep_ep.utils is ep.utils
assert md.version("uccl-ep").endswith("+cu13"), md.version("uccl-ep")
assert "site-packages" in ep.__file__ and "site-packages" in _C.__file__, (ep.__file__, _C.__file__)
assert not hasattr(__import__("uccl"), "__file__") or __import__("uccl").__file__ is None, "uccl must be a namespace"
assert not torch.cuda.is_initialized()
print(f"ci_wheel: uccl-ep {md.version('uccl-ep')} imports without a GPU from {os.path.dirname(ep.__file__)}; "
      f"deep_ep is the alias")
PY
