"""Real NVIDIA Triton from the `nvidia-pytriton` wheel: the reference Stride is diffed and
benchmarked against.

The wheel (installed by `make triton-server` into .venv-pytriton) ships the
`tritonserver` binary, Triton's C++ core with its gRPC and HTTP front ends, and the
Python backend, but no ONNX Runtime backend. So `triton_repository` converts an
exported Stride repository into one Triton loads: each config's
`platform: "onnxruntime_onnx"` becomes `backend: "python"`, and each version folder
gets a `model.py` that runs the same `model.onnx` with ONNX Runtime (the ONNX file is
linked, not copied). What Triton's core does around the model (parsing, checking,
batching, classification, statistics, errors) is Triton's own.

Facts the start needs (found by trying): the binary wants the wheel's
`external_libs` and `nvidia_pytriton.libs` on LD_LIBRARY_PATH; the Python backend
wants its stub (`python_backend_stubs/<python>/triton_python_backend_stub`) next to
`libtriton_python.so`; the stub runs the system's libpython and does not read
PYTHONPATH, so `model.py` puts the venv's site-packages on sys.path itself. Without
a GPU it logs NVML/DCGM errors and works.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import free_port, stop  # noqa: E402

PYTRITON_VENV = ROOT / ".venv-pytriton"
PYTRITON_PYTHON = PYTRITON_VENV / "bin" / "python"

MODEL_PY = '''"""Written by bench/triton_peer.py: run {onnx!r} with ONNX Runtime in Triton's Python
backend, batching every request of an execute() call into one run."""

import json
import os
import sys

SITE_PACKAGES = {site!r}  # the stub does not read PYTHONPATH
if SITE_PACKAGES not in sys.path:
    sys.path.insert(0, SITE_PACKAGES)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = {threads}
        options.add_session_config_entry("session.intra_op.allow_spinning", "{spin}")
        self.session = ort.InferenceSession(
            os.path.join(folder, {onnx!r}), options, providers=["CPUExecutionProvider"]
        )
        self.batched = config.get("max_batch_size", 0) > 0
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        if self.batched and len(requests) > 1:
            feeds = {{
                name: np.concatenate([a[i] for a in arrays])
                for i, name in enumerate(self.inputs)
            }}
        else:
            feeds = dict(zip(self.inputs, arrays[0]))
        results = self.session.run(self.outputs, feeds)
        if not (self.batched and len(requests) > 1):
            return [self._response(results)]
        responses, start = [], 0
        for a in arrays:
            rows = a[0].shape[0]
            responses.append(self._response([r[start : start + rows] for r in results]))
            start += rows
        return responses

    def _response(self, results):
        pairs = zip(self.outputs, results)
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in pairs]
        return pb_utils.InferenceResponse(output_tensors=tensors)
'''


def _site_packages() -> Path | None:
    found = sorted((PYTRITON_VENV / "lib").glob("python3*/site-packages"))
    return found[0] if found else None


def server_dir() -> Path | None:
    """The wheel's `pytriton/tritonserver` folder, or None when it is not installed."""
    site = _site_packages()
    folder = site / "pytriton" / "tritonserver" if site else None
    return folder if folder is not None and (folder / "bin" / "tritonserver").exists() else None


def _python_version() -> str:
    site = _site_packages()
    return site.parent.name.removeprefix("python") if site else ""


def unusable() -> str | None:
    """Why real Triton cannot run here, or None when it can."""
    folder = server_dir()
    if folder is None:
        return "no tritonserver: `make triton-server` installs nvidia-pytriton in .venv-pytriton"
    version = _python_version()
    stub = folder / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        return f"the wheel has no Python backend stub for Python {version}"
    if ctypes.util.find_library(f"python{version}") is None:
        return f"the Python backend stub needs the system's libpython{version}, which is missing"
    return None


def _environment(folder: Path) -> dict[str, str]:
    site = folder.parent.parent
    libs = [str(folder / "external_libs"), str(site / "nvidia_pytriton.libs")]
    libs.append(os.environ.get("LD_LIBRARY_PATH", ""))
    return dict(os.environ, LD_LIBRARY_PATH=":".join(p for p in libs if p))


def _install_stub(folder: Path) -> None:
    """Put the Python backend's stub next to libtriton_python.so (once per venv)."""
    target = folder / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists():
        stub = folder / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"
        shutil.copy2(stub, target)


def triton_repository(
    source: Path,
    target: Path,
    *,
    threads: int = 0,
    spin: bool = False,
    site_packages: Path | None = None,
) -> list[str]:
    """Write a repository Triton's Python backend serves from an exported Stride one.

    Returns the model names converted. ONNX files are linked (copied where links fail);
    config.pbtxt is rewritten through protobuf, so every other field stays as it was.
    """
    from google.protobuf import text_format

    from services.generated.inference import model_config_pb2 as mc

    site = site_packages or _site_packages()  # where model.py finds numpy and onnxruntime
    if site is None:
        raise FileNotFoundError(f"{PYTRITON_VENV} is missing: run `make triton-server`")
    names = []
    for config_path in sorted(source.glob("*/config.pbtxt")):
        folder = config_path.parent
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        onnx_name = config.default_model_filename or "model.onnx"
        config.platform = ""
        config.backend = "python"
        config.ClearField("default_model_filename")  # the Python backend's is model.py
        out = target / folder.name
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.pbtxt").write_text(text_format.MessageToString(config))
        for extra in folder.iterdir():
            if extra.is_file() and extra.name != "config.pbtxt":
                shutil.copy2(extra, out / extra.name)
        for version in folder.iterdir():
            if not (version.is_dir() and version.name.isdigit()):
                continue
            (out / version.name).mkdir(exist_ok=True)
            link = out / version.name / onnx_name
            if not link.exists():
                try:
                    link.symlink_to((version / onnx_name).resolve())
                except OSError:
                    shutil.copy2(version / onnx_name, link)
            code = MODEL_PY.format(onnx=onnx_name, site=str(site), threads=threads, spin=int(spin))
            (out / version.name / "model.py").write_text(code)
        names.append(folder.name)
    return names


@dataclass
class Triton:
    """A running tritonserver and its ports."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    def stop(self) -> int:
        return stop(self.proc)


def _server_version(port: int) -> str:
    """ "tritonserver 2.51.0", from the running server's metadata."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2", timeout=5) as reply:
        meta = json.loads(reply.read())
    return f"tritonserver {meta.get('version', '?')}"


def _http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    repository: Path,
    *,
    log: Path,
    explicit: bool = False,
    timeout: float = 120,
) -> Triton:
    """Start tritonserver over a converted repository and wait until it is ready.

    With `explicit`, models are loaded at start but may be unloaded and loaded again
    through the repository API (Triton's default mode refuses those calls).
    """
    reason = unusable()
    if reason:
        raise RuntimeError(reason)
    folder = server_dir()
    assert folder is not None
    _install_stub(folder)
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    args = [
        str(folder / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={folder / 'backends'}",
        f"--http-port={http}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics}",
        "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
        "--allow-gpu-metrics=false", "--log-verbose=0", "--exit-timeout-secs=5",
    ]  # fmt: skip
    if explicit:
        args += ["--model-control-mode=explicit", "--load-model=*"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=_environment(folder)
        )
    triton = Triton(proc, http, grpc_port, metrics, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"tritonserver exited with {proc.returncode}:\n{tail}")
        if _http_ready(http):
            return triton
        time.sleep(0.1)
    triton.stop()
    raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s; log: {log}")


def version() -> str | None:
    """The tritonserver version the wheel ships (from its metadata), None when absent."""
    site = _site_packages()
    if site is None:
        return None
    found = sorted(site.glob("nvidia_pytriton-*.dist-info/METADATA"))
    if not found:
        return "nvidia-pytriton"
    return f"nvidia-pytriton {found[0].parent.name.removesuffix('.dist-info').split('-')[1]}"


def measure(
    repo: Path,
    models: Sequence[str],
    concurrency: Sequence[int],
    protocols: Sequence[str] = ("grpc", "http"),
    window_ms: int = 2000,
    retry: bool = True,
    workers: Sequence[int] = (1,),
    echo: bool = False,
) -> dict[str, Any]:
    """`stride serve` and real Triton over the same model.onnx files and batching config,
    driven by the same perf_analyzer (batch-1 requests), each run of Stride next to its
    Triton run in time, the order flipped from one figure to the next. Figures per model,
    concurrency and protocol: infer/s, p50 and p99 of both, and Stride's infer/s over
    Triton's (above 1: Stride serves more).

    `workers`: a `stride serve --workers N` for each N, all up at once, each measured in
    turn (`stride` holds the first, `stride_workers` all). `echo`: also grpc.aio answering
    a fixed message with no model (bench/frontends.py's `aio-echo`: one Python process's
    ceiling), measured beside the digits model's gRPC figures.

    ONNX Runtime runs with the same options in both (one inter-op thread, intra-op
    threads one per core, no spinning: `stride serve`'s defaults).
    """
    from bench.servers import perf_analyzer_unusable, perf_run, start_stride_serve, wait_ready

    reason = unusable() or perf_analyzer_unusable()
    if reason:
        return {"skipped": reason}
    runs: dict[str, Any] = {}
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="stride-bench-triton-") as tmp:
        converted = Path(tmp) / "triton"
        triton_repository(repo, converted)
        for name in list(converted.iterdir()):
            if name.name not in models:
                shutil.rmtree(name)
        ports: dict[str, dict[str, int]] = {}
        triton = None
        try:
            for n in workers:
                port, http_port = free_port(), free_port()
                servers.append(start_stride_serve(repo, port, http_port=http_port, workers=n))
                wait_ready(port, servers[-1])
                ports[f"stride{n}"] = {"grpc": port, "http": http_port}
            echo_port = None
            if echo and "digits" in models:
                from bench.frontends import _start as start_frontend

                echo_port = free_port()
                servers.append(start_frontend("aio-echo", repo, echo_port))
                wait_ready(echo_port, servers[-1])
            triton = start(converted, log=Path(tmp) / "triton.log")
            server_version = _server_version(triton.http_port)
            ports["triton"] = {"grpc": triton.grpc_port, "http": triton.http_port}
            turn = 0
            for model in models:
                for c in concurrency:
                    for protocol in protocols:
                        order = [*(f"stride{n}" for n in workers), "triton"]
                        if echo_port is not None and model == "digits" and protocol == "grpc":
                            order.append("echo")
                            ports["echo"] = {"grpc": echo_port}
                        if turn % 2:
                            order.reverse()
                        turn += 1
                        got = {
                            name: perf_run(model, ports[name][protocol], c, window_ms, retry,
                                           protocol)
                            for name in order
                        }  # fmt: skip
                        ours = got[f"stride{workers[0]}"]
                        entry: dict[str, Any] = {
                            "model": model,
                            "concurrency": c,
                            "protocol": protocol,
                            "stride": ours,
                            "triton": got["triton"],
                            "ratio": ours["throughput"] / got["triton"]["throughput"],
                            "stride_workers": {n: got[f"stride{n}"] for n in workers},
                        }
                        if "echo" in got:
                            entry["echo"] = got["echo"]
                        runs[f"{model}@{c}/{protocol}"] = entry
        finally:
            for server in servers:
                stop(server)
            if triton is not None:
                triton.stop()
    return {
        "triton_version": f"{server_version}, {version()}",
        "client": "perf_analyzer (batch 1)",
        "workers": list(workers),
        "runs": runs,
    }
