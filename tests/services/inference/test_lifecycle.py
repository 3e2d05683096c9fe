"""Start-up and clean-up of the inference server, and its metrics port (issues 14 and 15).

A failed start leaves no poller, metrics thread or loaded model behind; listing the
repository does not hold the lock every request takes; the metrics port bounds its
connections and their time, and can sit behind the gRPC port's TLS.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.common import ServerOptions, TlsFiles
from services.inference.metrics import MetricsServer
from services.inference.repository import ModelRepository
from services.inference.runtime import RuntimeOptions
from services.inference.server import InferenceServer, MetricsOptions
from tests.services.common.certs import make_certs
from tests.services.inference.onnx_models import add_model


def threads_named(*names: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_failed_start_leaves_no_poller_metrics_or_model(tmp_path: Path) -> None:
    add_model(tmp_path, "digits")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = InferenceServer(
            tmp_path,
            ServerOptions(host="127.0.0.1", port=port),
            metrics=MetricsOptions(port=0),
            poll_interval=0.05,
        )
        with pytest.raises(OSError, match="cannot listen"):
            server.start()
    assert server.metrics is not None and refused(server.metrics.port)
    assert threads_named("metrics", "repository-poll") == []
    assert server.repository.models() == []


def test_index_lists_the_folder_without_the_request_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_model(tmp_path, "digits")
    repository = ModelRepository(tmp_path, RuntimeOptions(intra_op_threads=1))
    repository.poll()
    listing, slow = threading.Event(), threading.Event()
    names = repository._model_names

    def slow_listing() -> list[str]:
        listing.set()
        slow.wait(5)  # a slow network file system
        return names()

    monkeypatch.setattr(repository, "_model_names", slow_listing)
    indexer = threading.Thread(target=repository.index)
    indexer.start()
    try:
        assert listing.wait(5)
        start = time.monotonic()
        assert repository.get("digits").name == "digits"  # what every ModelInfer does
        assert time.monotonic() - start < 0.5
    finally:
        slow.set()
        indexer.join(5)
        repository.close()


def metrics_server(**options: Any) -> MetricsServer:
    return MetricsServer("127.0.0.1", 0, lambda: [], **options).start()


def scrape(url: str, **kwargs: Any) -> str:
    with urllib.request.urlopen(url, timeout=5, **kwargs) as page:
        return str(page.read().decode())


def test_metrics_connections_are_limited_and_timed_out() -> None:
    server = metrics_server(max_connections=2, timeout=0.5)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        held = [  # from five addresses (a quarter of the connections is one address's share)
            socket.create_connection(("127.0.0.1", server.port), source_address=(f"127.0.0.{i}", 0))
            for i in range(1, 6)
        ]
        for sock in held:
            sock.sendall(b"GET /met")  # and never the rest
        deadline = time.monotonic() + 2
        while server.open_connections + server.refused < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.open_connections == 2 and server.refused == 3
        for sock in held:
            sock.settimeout(2)
            assert sock.recv(100) == b""  # closed: at once, or after the timeout
            sock.close()
        deadline = time.monotonic() + 2
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler threads notice their closed sockets
        assert "nv_inference_request_success" in scrape(url)
        # A client trickling a byte at a time is cut at the timeout all the same.
        trickle = socket.create_connection(("127.0.0.1", server.port))
        start = time.monotonic()
        with pytest.raises(OSError):
            for byte in b"GET /metrics HTTP/1.0\r\n" * 10:
                trickle.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - start < 2.0
        trickle.close()
    finally:
        server.stop()


def test_one_address_gets_a_quarter_of_the_metrics_connections() -> None:
    """Connections held by one client leave the others' scrapes served (issue 25, item 13)."""
    server = metrics_server(max_connections=8, timeout=5)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        held = [
            socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0))
            for _ in range(8)
        ]
        for sock in held:
            sock.sendall(b"GET /met")  # and never the rest
        deadline = time.monotonic() + 2
        while server.open_connections + server.refused < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.open_connections == 2 and server.refused == 6
        assert "nv_inference_request_success" in scrape(url)  # from 127.0.0.1
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_metrics_behind_the_servers_tls(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    tls = TlsFiles(certs["server.pem"], certs["server.key"], certs["ca.pem"])
    server = metrics_server(tls=tls, timeout=2)
    url = f"https://localhost:{server.port}/metrics"
    try:
        context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        with pytest.raises((urllib.error.URLError, OSError)):
            scrape(url, context=context)  # no client certificate
        context.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
        assert "nv_inference_request_success" in scrape(url, context=context)
        with pytest.raises((urllib.error.URLError, OSError)):
            scrape(f"http://127.0.0.1:{server.port}/metrics")  # plain HTTP
    finally:
        server.stop()


def test_metrics_tls_needs_the_servers_tls(tmp_path: Path) -> None:
    add_model(tmp_path, "digits")
    with pytest.raises(ValueError, match="--tls-cert"):
        InferenceServer(
            tmp_path, ServerOptions(host="127.0.0.1", port=0), metrics=MetricsOptions(tls=True)
        )


def test_probe_methods_answer_while_every_handler_thread_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.servicer import InferenceServicer

    add_model(tmp_path, "digits")
    gate, entered = threading.Event(), threading.Event()
    original = InferenceServicer.ServerMetadata

    def blocked(self: InferenceServicer, request: Any, context: Any) -> Any:
        entered.set()
        gate.wait(5)
        return original(self, request, context)

    monkeypatch.setattr(InferenceServicer, "ServerMetadata", blocked)
    server = InferenceServer(
        tmp_path, ServerOptions(host="127.0.0.1", port=0, handler_threads=1), metrics=None
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            busy = stub.ServerMetadata.future(pb.ServerMetadataRequest(), timeout=10)
            assert entered.wait(5)  # the one handler thread is taken
            queued = stub.ServerMetadata.future(pb.ServerMetadataRequest(), timeout=10)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=1).live
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready
            assert stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=1).ready
            assert not queued.done()
            gate.set()
            assert busy.result().name == queued.result().name == "stride"
    finally:
        gate.set()
        server.stop(0)
