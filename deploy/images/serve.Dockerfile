# syntax=docker/dockerfile:1
# Serving image: `stride serve` (inference) and `stride serve-analysis` (run comparison).
# Installs the `serve` and `analysis` extras only: no torch, no Ray, CPU ONNX Runtime.
# Build from the repository root (the context is the repository, see /.dockerignore):
#   docker build -f deploy/images/serve.Dockerfile -t stride-serve:0.1.0 .

FROM python:3.12.12-slim-trixie AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Every dependency from the hash-checked lock (tools/lock_deps.py writes it), in a layer
# of its own that is reused until the lock changes; then Stride itself, built with the
# locked setuptools and nothing more. A regular (not editable) install: the final stage
# gets /opt/venv and nothing from /src.
COPY deploy/locks/serve.txt deploy/locks/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r deploy/locks/serve.txt
COPY pyproject.toml README.md ./
COPY stride/ stride/
COPY pipeline/ pipeline/
COPY services/ services/
COPY runstore/ runstore/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ".[serve,analysis]" \
    && /opt/venv/bin/pip check

FROM python:3.12.12-slim-trixie
# A named account for the numeric id: some libraries ask for the user name (getpass).
RUN groupadd --system --gid 10001 stride \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp/scratch --shell /usr/sbin/nologin stride
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp/scratch \
    TMPDIR=/tmp/scratch \
    MPLCONFIGDIR=/tmp/scratch/matplotlib
# REST, gRPC, Prometheus metrics, plaintext gRPC health (inference); gRPC, health (analysis).
EXPOSE 8000 8001 8002 8081 8003 8083
USER 10001:10001
WORKDIR /tmp/scratch
ENTRYPOINT ["stride"]
CMD ["serve"]
