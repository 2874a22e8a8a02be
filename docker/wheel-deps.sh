#!/usr/bin/env bash
# Inside a manylinux_2_28 image (docker/wheel-*.Dockerfile): what scripts/build_wheel.sh needs besides the
# toolkit. spdlog and fmt as headers (the module uses them header-only), libfabric's and rdma-core's headers (both
# libraries are opened at run time, the build reads their headers only), and per CPython 3.10-3.13: setuptools,
# wheel, pybind11 and ninja. Versions are pinned; the image fetches them once at build time.
set -euo pipefail
SPDLOG=1.10.0 FMT=9.1.0 LIBFABRIC=1.17.0
prefix=/opt/uccl-deps
mkdir -p "${prefix}/include" /tmp/deps
cd /tmp/deps
curl -fsSL "https://github.com/gabime/spdlog/archive/refs/tags/v${SPDLOG}.tar.gz" | tar -xz
curl -fsSL "https://github.com/fmtlib/fmt/archive/refs/tags/${FMT}.tar.gz" | tar -xz
curl -fsSL "https://github.com/ofiwg/libfabric/releases/download/v${LIBFABRIC}/libfabric-${LIBFABRIC}.tar.bz2" | tar -xj
cp -r "spdlog-${SPDLOG}/include/spdlog" "fmt-${FMT}/include/fmt" "${prefix}/include/"
cp -r "libfabric-${LIBFABRIC}/include/rdma" "${prefix}/include/"
dnf install -y rdma-core-devel binutils && dnf clean all
for py in /opt/python/cp310-cp310 /opt/python/cp311-cp311 /opt/python/cp312-cp312 /opt/python/cp313-cp313; do
  "${py}/bin/python" -m pip install --no-cache-dir setuptools wheel pybind11 ninja cmake
done
rm -rf /tmp/deps
