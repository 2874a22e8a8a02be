# The image `build.sh --wheel rocm` builds uccl-ep's ROCm wheels in: manylinux_2_28 with ROCm 6.4 (hipcc, HIP
# runtime) and CPython 3.10-3.13. AMD targets: UCCL_EP_ROCM_ARCHS (default gfx942;gfx950, which ROCm 6.4 knows).
# Untested on the development machines (no docker daemon); there the same script builds on the host with Debian's
# hipcc 5.2, which knows gfx90a and gfx940 but not gfx942 or gfx950.
FROM pytorch/manylinux2_28-builder:rocm6.4
COPY wheel-deps.sh /tmp/wheel-deps.sh
RUN /tmp/wheel-deps.sh && rm /tmp/wheel-deps.sh
ENV UCCL_EP_SPDLOG_INCLUDE_DIR=/opt/uccl-deps/include \
    CMAKE_ARGS=-DUCCL_EP_FABRIC_INCLUDE_DIR=/opt/uccl-deps/include \
    PATH=/opt/rocm/bin:$PATH
WORKDIR /src
