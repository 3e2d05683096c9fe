# syntax=docker/dockerfile:1
# GPU serving image: the serving image with ONNX Runtime's CUDA build (onnxruntime-gpu)
# in place of the CPU `onnxruntime`. The base brings the CUDA runtime and cuDNN that
# onnxruntime-gpu loads; its CUDA major must match the wheel's (CUDA 13, cuDNN 9 for
# the PyPI builds of 1.31.1, the release deploy/locks/serve-gpu.txt pins; its version
# is set in tools/lock_deps.py). The node needs the NVIDIA driver and device plugin.
# Build from the repository root:
#   docker build -f deploy/images/serve-gpu.Dockerfile -t stride-serve-gpu:0.1.0 .

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
# Both wheels provide the `onnxruntime` module, so only the GPU one may be installed: the
# lock has onnxruntime-gpu in place of the `serve` extra's onnxruntime, and Stride goes in
# without dependencies (`pip check` reads no extras, so it does not miss the CPU wheel).
COPY deploy/locks/serve-gpu.txt deploy/locks/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r deploy/locks/serve-gpu.txt
COPY pyproject.toml README.md ./
COPY stride/ stride/
COPY pipeline/ pipeline/
COPY services/ services/
COPY runstore/ runstore/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ".[serve,analysis]" \
    && /opt/venv/bin/pip check

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
# Only the interpreter the venv links to; no compilers, no pip outside the venv.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stride \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp/scratch --shell /usr/sbin/nologin stride
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp/scratch \
    TMPDIR=/tmp/scratch \
    MPLCONFIGDIR=/tmp/scratch/matplotlib
# REST, gRPC, Prometheus metrics, plaintext gRPC health.
EXPOSE 8000 8001 8002 8081
USER 10001:10001
WORKDIR /tmp/scratch
ENTRYPOINT ["stride"]
CMD ["serve"]
