"""`stride serve --workers 2`: two processes on one gRPC and one REST port, as a user runs it.

Each test starts the real command. Connections are opened one per request (a gRPC
channel with its own subchannel, a new HTTP connection), so that the kernel spreads
them over both workers; with 24 of them the chance that one worker gets none is 1 in
8 million.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.servers import free_port
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.services.inference.conftest import infer_request
from tests.services.inference.onnx_models import add_model, classifier, slow_model

ROOT = Path(__file__).resolve().parents[3]
CONNECTIONS = 24
X = np.zeros((1, 1, 8, 8), np.float32)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="--workers > 1 needs Linux (SO_REUSEPORT)"
)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    metrics_port: int
    health_port: int
    pids: list[int]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(tmp_path: Path, repo: Path, *extra: str) -> Iterator[Served]:
    """`stride serve --workers 2` on fresh ports, until every worker serves; stopped after."""
    port, http_port, metrics_port, health_port = (free_port() for _ in range(4))
    out, log = tmp_path / "stdout.txt", tmp_path / "server.log"
    command = [
        sys.executable, "-m", "stride.cli", "--log-level", "INFO", "serve",
        "--repository", str(repo), "--host", "127.0.0.1", "--port", str(port),
        "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--health-port", str(health_port), "--log-format", "text", "--workers", "2",
        "--threads", "1", *extra,
    ]  # fmt: skip
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while "listening on" not in out.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        line = out.read_text()
        pids = [int(p) for p in re.search(r"pids ([\d ]+)", line).group(1).split()]  # type: ignore[union-attr]
        assert len(pids) == 2 and proc.pid not in pids
        yield Served(proc, port, http_port, metrics_port, health_port, pids, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def channel(port: int) -> grpc.Channel:
    """A channel with a connection of its own (gRPC shares them between channels by default)."""
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def fresh_infer(port: int, version: str = "") -> pb.ModelInferResponse:
    with channel(port) as ch:
        request = infer_request(X)
        request.model_version = version
        return pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=60)


def rest(port: int, method: str, path: str, body: object | None = None) -> tuple[int, object]:
    """One request on a new connection: (status, JSON answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        text = reply.read()
        return reply.status, json.loads(text) if text else None
    finally:
        connection.close()


def metrics(port: int) -> dict[str, float]:
    """The metrics page as {series with labels: value}."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as page:
        lines = page.read().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line[:1] != "#")}


def per_worker(page: dict[str, float], protocol: str) -> dict[str, float]:
    found = {}
    for key, value in page.items():
        match = re.match(
            r'stride_worker_requests\{worker="(\d+)",pid="\d+",protocol="(\w+)"\}', key
        )
        if match and match.group(2) == protocol:
            found[match.group(1)] = value
    return found


def test_both_protocols_on_one_port_every_figure_summed_and_control_reaches_all(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repository"
    add_model(repo, "digits")
    with serve(tmp_path, repo, "--model-control", "explicit") as server:
        for _ in range(CONNECTIONS):
            assert fresh_infer(server.port).model_version == "1"
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                "data": [0.0] * 64}]}  # fmt: skip
            status, _ = rest(server.http_port, "POST", "/v2/models/digits/infer", body)
            assert status == 200
        page = metrics(server.metrics_port)
        assert page["stride_workers"] == 2
        for protocol in ("grpc", "http"):  # both processes answered on each port
            calls = per_worker(page, protocol)
            assert sorted(calls) == ["0", "1"] and all(n > 0 for n in calls.values()), page
        requests = 2 * CONNECTIONS
        assert page['nv_inference_request_success{model="digits",version="1"}'] == requests
        assert page['nv_inference_count{model="digits",version="1"}'] == requests
        grpc_ok = 'stride_requests{protocol="grpc",method="ModelInfer",status="OK"}'
        assert page[grpc_ok] == CONNECTIONS
        # ModelStatistics is the sum too, over gRPC and REST, whichever worker answers.
        for _ in range(4):
            with channel(server.port) as ch:
                stats = pb_grpc.GRPCInferenceServiceStub(ch).ModelStatistics(
                    pb.ModelStatisticsRequest(name="digits"), timeout=60
                )
            assert stats.model_stats[0].inference_stats.success.count == requests
            status, answer = rest(server.http_port, "GET", "/v2/models/digits/stats")
            assert status == 200
            assert answer["model_stats"][0]["inference_stats"]["success"]["count"] == requests  # type: ignore[index]
        # Unload and load are answered once every worker has taken them.
        status, _ = rest(server.http_port, "POST", "/v2/repository/models/digits/unload", {})
        assert status == 200
        for _ in range(CONNECTIONS // 2):
            with pytest.raises(grpc.RpcError) as refused:
                fresh_infer(server.port)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        with channel(server.port) as ch:
            pb_grpc.GRPCInferenceServiceStub(ch).RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="digits"), timeout=60
            )
        for _ in range(CONNECTIONS // 2):
            assert fresh_infer(server.port).model_version == "1"
        status, answer = rest(server.http_port, "POST", "/v2/repository/models/nope/load", {})
        assert status == 404 and "nope" in str(answer)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.log_text()[-3000:]
    log = server.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_a_new_version_is_routed_by_every_worker_only_once_all_have_loaded_it(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repository"
    folder = add_model(repo, "digits")
    with serve(tmp_path, repo, "--poll-interval", "0.3") as server:
        assert fresh_infer(server.port).model_version == "1"
        classifier(folder / ".tmp-2" / "model.onnx", seed=2)  # published as `stride export` does
        (folder / ".tmp-2").rename(folder / "2")
        deadline = time.monotonic() + 60
        while fresh_infer(server.port).model_version != "2":
            assert time.monotonic() < deadline, server.log_text()[-3000:]
            time.sleep(0.1)
        # Every worker serves version 2 and none version 1 any more (the latest policy).
        deadline = time.monotonic() + 30
        while not all(fresh_infer(server.port).model_version == "2" for _ in range(CONNECTIONS)):
            assert time.monotonic() < deadline, server.log_text()[-3000:]
        for _ in range(CONNECTIONS // 2):
            with pytest.raises(grpc.RpcError) as gone:
                fresh_infer(server.port, version="1")
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        log = server.log_text()
    # Each worker had loaded version 2 before the supervisor let any route to it.
    lines = log.splitlines()
    loaded = [i for i, line in enumerate(lines) if "loaded; routing to it once" in line]
    commit = [i for i, line in enumerate(lines) if "every worker has loaded; routing" in line]
    ready = [i for i, line in enumerate(lines) if "model digits version 2 ready" in line]
    assert len(loaded) == 2 and len(commit) == 1 and len(ready) == 2, log[-3000:]
    assert max(loaded) < commit[0] < min(ready), log[-3000:]


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.mark.slow
def test_sigterm_drains_every_worker_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    add_model(repo, "digits")  # fast: spreads the connections
    slow_model(repo, depth=400)  # a request takes a second or more
    x = np.ones((64, 1024), np.float32)
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="input", datatype="FP32", shape=[64, 1024])
    request.raw_input_contents.append(x.tobytes())
    request.outputs.add(name="logits")
    with serve(tmp_path, repo, "--grace-period", "120") as server:
        channels: list[grpc.Channel] = []
        mine: dict[str, grpc.Channel] = {}  # a connection held by each worker
        try:
            # New connections until each worker holds one: a warm-up call on each tells
            # which worker the kernel gave it to (a connection stays with its worker).
            calls = per_worker(metrics(server.metrics_port), "grpc")
            while len(mine) < 2:
                assert len(channels) < 32, f"the connections all went to {list(mine)}"
                channels.append(channel(server.port))
                stub = pb_grpc.GRPCInferenceServiceStub(channels[-1])
                stub.ModelInfer(infer_request(X), timeout=120)
                before, calls = calls, per_worker(metrics(server.metrics_port), "grpc")
                (worker,) = [w for w, n in calls.items() if n > before.get(w, 0)]
                mine.setdefault(worker, channels[-1])
            results: list[object] = []

            def call(ch: grpc.Channel) -> None:
                try:
                    reply = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=300)
                    results.append(np.frombuffer(reply.raw_output_contents[0], np.float32))
                except grpc.RpcError as exc:
                    results.append(exc)

            # One slow request on each worker, in flight when SIGTERM comes.
            threads = [threading.Thread(target=call, args=(ch,)) for ch in mine.values()]
            for thread in threads:
                thread.start()
            pending = 'nv_inference_pending_request_count{model="slow",version="1"}'
            deadline = time.monotonic() + 60
            while (page := metrics(server.metrics_port))[pending] < len(mine):
                assert time.monotonic() < deadline, (
                    f"{page[pending]} of {len(mine)} requests in flight; "
                    f"{per_worker(page, 'grpc')} answered by each worker; {results}"
                )
                time.sleep(0.01)
            server.proc.send_signal(signal.SIGTERM)
            saw_not_serving = False
            while any(t.is_alive() for t in threads):
                with contextlib.suppress(grpc.RpcError):
                    saw_not_serving |= _health(server.health_port) == 2  # NOT_SERVING
                time.sleep(0.02)
            for thread in threads:
                thread.join()
        finally:
            for ch in channels:
                ch.close()
        assert [type(r).__name__ for r in results] == ["ndarray"] * len(mine), results
        assert all(np.allclose(r, 1.0) for r in results)  # type: ignore[arg-type]
        assert saw_not_serving
        assert server.proc.wait(60) == 0, server.log_text()[-3000:]
        for pid in server.pids:
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_killed_worker_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    repo = tmp_path / "repository"
    add_model(repo, "digits")
    with serve(tmp_path, repo) as server:
        victim, other = server.pids
        os.kill(victim, signal.SIGKILL)
        assert server.proc.wait(90) == 1
        log = server.log_text()
        assert f"worker 0 (pid {victim}) exited with signal SIGKILL: stopping the server" in log
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{other}") and not _zombie(other):
            assert time.monotonic() < deadline, "the other worker outlived the server"
            time.sleep(0.1)


def test_tls_token_and_the_health_port_work_in_every_worker(tmp_path: Path) -> None:
    import ssl

    from tests.services.common.certs import make_certs

    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    repo = tmp_path / "repository"
    add_model(repo, "digits")
    (tmp_path / "token").write_text("s3cret\n")
    flags = ["--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
             "--auth-token-file", str(tmp_path / "token")]  # fmt: skip
    with serve(tmp_path, repo, *flags) as server:
        credentials = grpc.ssl_channel_credentials(certs["ca.pem"].read_bytes())
        token = (("authorization", "Bearer s3cret"),)
        for _ in range(CONNECTIONS):
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials, options) as ch:
                stub = pb_grpc.GRPCInferenceServiceStub(ch)
                assert stub.ModelInfer(infer_request(X), metadata=token, timeout=60).outputs
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ModelInfer(infer_request(X), timeout=60)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        for _ in range(CONNECTIONS):
            connection = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=context)
            connection.request(
                "GET", "/v2/models/digits", headers={"Authorization": "Bearer s3cret"}
            )
            assert connection.getresponse().status == 200
            connection.close()
        page = metrics(server.metrics_port)
        for protocol in ("grpc", "http"):
            assert all(n > 0 for n in per_worker(page, protocol).values()), page
        assert _health(server.health_port) == 1  # SERVING, in plain text


def _serve_briefly(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "stride.cli", "serve", "--host", "127.0.0.1",
               "--metrics-port", "-1", "--workers", "2", *argv]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_worker_that_cannot_start_fails_the_start_with_its_error(tmp_path: Path) -> None:
    done = _serve_briefly(tmp_path, "--repository", str(tmp_path / "missing"), "--port", "0",
                          "--http-port", "0")  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "worker 0: model repository" in done.stderr and "is not a folder" in done.stderr
    assert "before it was ready" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_busy_port_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    import socket

    repo = tmp_path / "repository"
    add_model(repo, "digits")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _serve_briefly(tmp_path, "--repository", str(repo), "--port", str(port),
                              "--http-port", "0")  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr[-3000:]
    assert "worker" not in done.stderr  # refused by the supervisor itself
