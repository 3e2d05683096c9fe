# syntax=docker/dockerfile:1
# Training image: the `train` extra (torch, Ray Train, ONNX export) for the Ray head and
# workers of a KubeRay RayJob, and for `stride train` / `stride sweep` anywhere.
#
# Base: nvidia/cuda's minimal `base` flavour rather than rayproject/ray. torch's wheels
# carry their own CUDA libraries, so the image needs from CUDA only what the `base`
# flavour has (the NVIDIA_* variables the container toolkit reads, cudart and the
# forward-compatibility package); rayproject/ray would bring a second Python stack,
# a second Ray that must match ours, sudo and compilers. KubeRay only needs `ray` on
# PATH (it replaces the entrypoint with `ray start ...`), and `wget` for its probes.
# Build from the repository root:
#   docker build -f deploy/images/train.Dockerfile -t stride-train:0.1.0 .

FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
# The hash-checked lock first (its layer outlives code changes), then Stride without
# dependencies, built with the locked setuptools.
COPY deploy/locks/train.txt deploy/locks/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r deploy/locks/train.txt
COPY pyproject.toml README.md ./
COPY stride/ stride/
COPY pipeline/ pipeline/
COPY services/ services/
COPY runstore/ runstore/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ".[train]" \
    && /opt/venv/bin/pip check

FROM nvidia/cuda:13.0.2-base-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
# python3 for the venv, wget for KubeRay's health probes, ca-certificates for object stores.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 wget ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stride \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp --shell /bin/bash stride
COPY --from=build /opt/venv /opt/venv
# Run configs shipped with the code: `--config /opt/stride/configs/digits.yaml`.
COPY configs/ /opt/stride/configs/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RAY_USAGE_STATS_ENABLED=0
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["stride"]
CMD ["train", "--help"]
