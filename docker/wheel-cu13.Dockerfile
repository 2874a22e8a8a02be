# The image `build.sh --wheel cu13` builds uccl-ep's cu13 wheels in: manylinux_2_28 (glibc 2.28) with CUDA 13.0,
# CPython 3.10-3.13 under /opt/python and auditwheel; docker/wheel-deps.sh adds the headers and Python build tools.
# Untested on the development machines (they have a docker client but no daemon): build.sh --wheel cu13 --no-docker
# runs the same scripts/build_wheel.sh on a host with the toolkit, which is how CI builds the wheel.
FROM pytorch/manylinux2_28-builder:cuda13.0
COPY wheel-deps.sh /tmp/wheel-deps.sh
RUN /tmp/wheel-deps.sh && rm /tmp/wheel-deps.sh
ENV UCCL_EP_SPDLOG_INCLUDE_DIR=/opt/uccl-deps/include \
    CMAKE_ARGS=-DUCCL_EP_FABRIC_INCLUDE_DIR=/opt/uccl-deps/include \
    CUDACXX=/usr/local/cuda/bin/nvcc \
    PATH=/usr/local/cuda/bin:$PATH
WORKDIR /src
