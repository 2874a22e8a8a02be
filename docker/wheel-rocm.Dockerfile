# The image `build.sh --wheel rocm` will build uccl-ep's ROCm wheels in: manylinux_2_28 with ROCm 6.4 (hipcc, HIP
# runtime) and CPython 3.10-3.13. The runtime and the Python module do not build for HIP yet (only the kernels are
# compile-checked), so scripts/build_wheel.sh stops with that message for rocm; the image is here so the recipe
# stays one. Untested on the development machines (no docker daemon).
FROM pytorch/manylinux2_28-builder:rocm6.4
COPY wheel-deps.sh /tmp/wheel-deps.sh
RUN /tmp/wheel-deps.sh && rm /tmp/wheel-deps.sh
ENV UCCL_EP_SPDLOG_INCLUDE_DIR=/opt/uccl-deps/include \
    CMAKE_ARGS=-DUCCL_EP_FABRIC_INCLUDE_DIR=/opt/uccl-deps/include \
    PATH=/opt/rocm/bin:$PATH
WORKDIR /src
