"""The REST front end in-process: endpoints, JSON and binary tensors, errors, limits,
token, TLS, metrics per protocol. (tests/services/inference/test_triton_conformance.py
diffs it against real Triton.)"""

from __future__ import annotations

import gzip
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.common import ServerOptions
from services.common.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    NotReady,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
)
from services.common.status import http_status_for
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.metrics import render
from services.inference.rest_server import HttpOptions
from services.inference.server import InferenceServer
from stride import cli
from tests.services.common.certs import make_certs
from tests.services.inference.onnx_models import LABELS, add_model, expected

X = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)


def call(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def start(repo: Path, **http: Any) -> InferenceServer:
    options = ServerOptions(
        host="127.0.0.1", port=0, grace_period=1, auth_token=http.pop("token", None),
        tls=http.pop("tls", None),
    )  # fmt: skip
    http_options = HttpOptions(host="127.0.0.1", port=0, grace_period=1, **http)
    http_options = HttpOptions(
        **{**http_options.__dict__, "tls": options.tls, "auth_token": options.auth_token}
    )
    return InferenceServer(
        repo, options, metrics=None, http=http_options, model_control=True
    ).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceServer]:
    repo = tmp_path_factory.mktemp("rest") / "repository"
    add_model(repo, "digits")
    add_model(repo, "spare")
    srv = start(repo)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def base(server: InferenceServer) -> str:
    assert server.http is not None
    return f"http://127.0.0.1:{server.http.port}"


def infer_json(x: np.ndarray, outputs: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "rest-1",
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32",
             "data": x.reshape(-1).tolist()}
        ],
    }  # fmt: skip
    if outputs is not None:
        body["outputs"] = outputs
    return json.dumps(body).encode()


def test_health_and_metadata(base: str) -> None:
    # Bodies as the protocol's REST text has them (KServe's client reads them; tritonclient
    # reads the status only).
    assert call(f"{base}/v2/health/live")[::2] == (200, b'{"live":true}')
    assert call(f"{base}/v2/health/ready")[::2] == (200, b'{"ready":true}')
    status, _, body = call(f"{base}/v2")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "stride" and "binary_tensor_data" in meta["extensions"]
    status, headers, body = call(f"{base}/v2/models/digits")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    ]
    assert call(f"{base}/v2/models/digits/versions/1")[0] == 200
    status, _, body = call(f"{base}/v2/models/digits/ready")
    assert status == 200 and json.loads(body) == {"name": "digits", "ready": True}
    status, _, body = call(f"{base}/v2/models/digits/versions/2/ready")
    assert status == 400 and json.loads(body) == {
        "name": "digits",
        "ready": False,
        "error": "Model version not ready",
    }
    config = json.loads(call(f"{base}/v2/models/digits/config")[2])
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [1, 8, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000


def test_infer_json_in_json_out(base: str) -> None:
    status, headers, body = call(f"{base}/v2/models/digits/infer", infer_json(X))
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["id"] == "rest-1" and answer["model_version"] == "1"
    logits, probs = expected(X, seed=1)
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["logits"]["shape"] == [2, 10]
    np.testing.assert_allclose(np.reshape(out["logits"]["data"], (2, 10)), logits, atol=1e-4)
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (2, 10)), probs, atol=1e-5)


def test_infer_binary_in_binary_out(base: str) -> None:
    raw = X.tobytes()
    header = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                        {"name": "logits"}],
        }
    ).encode()  # fmt: skip
    status, headers, body = call(
        f"{base}/v2/models/digits/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    size = int(headers["inference-header-content-length"])
    answer = json.loads(body[:size])
    probs_meta, logits_meta = answer["outputs"]
    assert probs_meta["parameters"] == {"binary_data_size": 80} and "data" in logits_meta
    probs = np.frombuffer(body[size:], np.float32).reshape(2, 10)
    np.testing.assert_allclose(probs, expected(X, seed=1)[1], atol=1e-5)


def test_infer_binary_by_default_and_gzip(base: str) -> None:
    body = json.loads(infer_json(X))
    body["parameters"] = {"binary_data_output": True}
    packed = gzip.compress(json.dumps(body).encode())
    status, headers, reply = call(
        f"{base}/v2/models/digits/infer", packed, {"Content-Encoding": "gzip"}
    )
    assert status == 200 and int(headers["inference-header-content-length"]) < len(reply)
    assert len(reply) - int(headers["inference-header-content-length"]) == 2 * 2 * 40
    status, _, reply = call(f"{base}/v2/models/digits/infer", b"x", {"Content-Encoding": "br"})
    assert status == 415


def test_classification(base: str) -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 3}}]
    status, _, body = call(f"{base}/v2/models/digits/infer", infer_json(X, outputs))
    (out,) = json.loads(body)["outputs"]
    assert status == 200 and out["datatype"] == "BYTES" and out["shape"] == [2, 3]
    probs = expected(X, seed=1)[1]
    best = int(np.argmax(probs[0]))
    assert out["data"][0] == f"{probs[0][best]:f}:{best}:{LABELS[best]}"


@pytest.mark.parametrize(
    ("path", "body", "method", "status", "text"),
    [
        ("/v2/models/nope/infer", infer_json(X), None, 404, "unknown model 'nope'"),
        ("/v2/models/digits/versions/7/infer", infer_json(X), None, 404, "no version 7"),
        ("/v2/models/digits/infer", infer_json(X[:, :, :, :7]), None, 400, "shape [2, 1, 8, 7]"),
        ("/v2/models/digits/infer", infer_json(np.zeros((9, 1, 8, 8))), None, 400, "batch size 9"),
        ("/v2/models/digits/infer", b"{nope", None, 400, "not valid JSON"),
        ("/v2/models/digits/infer", b'{"inputs": []}', None, 400, "no inputs"),
        ("/v2/models/digits/infer", None, "GET", 405, "Method Not Allowed"),
        ("/v2/models/digits", b"{}", None, 405, "Method Not Allowed"),
        ("/v2/nothing", None, None, 404, "Not Found"),
        ("/v2/models/nope/config", None, None, 404, "unknown model"),
        ("/v2/models/digits/infer", infer_json(X, [{"name": "nope"}]), None, 400, "unknown output"),
        (
            "/v2/models/digits/infer",
            infer_json(X, [{"name": "logits", "parameters": {"classification": -1}}]),
            None, 400, "non-negative integer",
        ),
        ("/v2/repository/index", b'{"ready": 3}', None, 400, "expected a boolean"),
        ("/v2/repository/models/nope/load", b"", None, 404, "no model 'nope'"),
        (
            "/v2/repository/models/digits/load", b'{"parameters": {"config": "{}"}}', None,
            501, "not supported",
        ),
    ],
)  # fmt: skip
def test_errors_answer_json_with_triton_statuses(
    base: str, path: str, body: bytes | None, method: str | None, status: int, text: str
) -> None:
    got, headers, reply = call(base + path, body, method=method)
    assert got == status, reply
    assert text in json.loads(reply)["error"]
    assert headers["x-request-id"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("x"), 400),
        (ModelNotFound("x"), 404),
        (NotReady("x"), 503),
        (ResourceExhausted("x"), 429),
        (DeadlineExceeded("x"), 504),
        (Unimplemented("x"), 501),
        (Unauthenticated("x"), 401),
        (RuntimeError("secret"), 500),
    ],
)
def test_http_status_table(error: Exception, status: int) -> None:
    got, message, expected_ = http_status_for(error, "rid")
    assert got == status
    assert ("secret" not in message) and (expected_ == (status != 500))


def test_statistics_index_unload_load(base: str) -> None:
    call(f"{base}/v2/models/digits/infer", infer_json(X))
    stats = json.loads(call(f"{base}/v2/models/digits/stats")[2])["model_stats"][0]
    assert stats["name"] == "digits" and stats["inference_count"] >= 2
    assert set(stats["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    every = json.loads(call(f"{base}/v2/models/stats")[2])["model_stats"]
    assert sorted(m["name"] for m in every) == ["digits", "spare"]
    assert call(f"{base}/v2/repository/models/spare/unload", b"")[0] == 200
    assert call(f"{base}/v2/models/spare/ready")[0] == 400
    status, _, body = call(f"{base}/v2/repository/index", b'{"ready": true}')
    assert [m["name"] for m in json.loads(body)] == ["digits"]
    status, _, body = call(f"{base}/v2/models/spare/infer", infer_json(X))
    assert status == 404 and "unloaded" in json.loads(body)["error"]
    assert call(f"{base}/v2/repository/models/spare/load", b"")[0] == 200
    assert call(f"{base}/v2/models/spare/ready")[0] == 200


def test_metrics_count_calls_per_protocol(server: InferenceServer, base: str) -> None:
    call(f"{base}/v2/models/nope/infer", infer_json(X))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerMetadata(pb.ServerMetadataRequest())
    page = render(server.repository.models(), server.counters)
    assert 'stride_requests{protocol="http",method="infer",status="404"}' in page
    assert 'stride_requests{protocol="grpc",method="ServerMetadata",status="OK"} 1' in page


def test_body_limits(tmp_path: Path) -> None:
    add_model(tmp_path, "digits")
    server = start(tmp_path, max_message_mb=0.001, memory_budget_mb=1, memory_budget_mb_per_peer=1)
    assert server.http is not None
    url = f"http://127.0.0.1:{server.http.port}/v2/models/digits/infer"
    try:
        status, _, body = call(url, infer_json(X))  # about 3 kB
        assert status == 413 and "--max-message-mb" in json.loads(body)["error"]
        bomb = gzip.compress(b" " * 100_000)
        status, _, body = call(url, bomb, {"Content-Encoding": "gzip"})
        assert status == 413 and "decompressed" in json.loads(body)["error"]
        assert call(url, infer_json(X[:1, :, :2, :2]))[0] == 400  # small enough to be read
        budget = server.http.app.budget
        budget.held = budget.total  # every byte of the budget held by other requests
        status, _, body = call(url, infer_json(X[:1, :, :2, :2]))
        assert status == 429 and "try again later" in json.loads(body)["error"]
        budget.held = 0
    finally:
        server.stop(0)


def test_token_and_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from services.common import TlsFiles

    certs = make_certs(tmp_path)
    add_model(tmp_path / "repo", "digits")
    tls = TlsFiles(certs["server.pem"], certs["server.key"])
    server = start(tmp_path / "repo", token="s3cret", tls=tls)
    assert server.http is not None
    base = f"https://127.0.0.1:{server.http.port}"
    context = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    try:
        assert call(f"{base}/v2/health/ready", context=context)[0] == 200  # open, like gRPC's
        status, headers, body = call(f"{base}/v2", context=context)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert "missing bearer token" in json.loads(body)["error"]
        auth = {"Authorization": "Bearer s3cret"}
        assert call(f"{base}/v2", headers=auth, context=context)[0] == 200
        assert call(f"{base}/v2", headers={"Authorization": "Bearer x"}, context=context)[0] == 401
        with pytest.raises(OSError):  # plain HTTP on the TLS port
            call(f"http://127.0.0.1:{server.http.port}/v2/health/ready")
        (tmp_path / "token").write_text("s3cret\n")
        png = tmp_path / "a.png"
        from PIL import Image

        Image.new("L", (8, 8), 99).save(png)
        args = [
            "predict", "--protocol", "http", "--server", f"localhost:{server.http.port}",
            "--model", "digits", "--top-k", "2", "--tls-ca", str(certs["ca.pem"]),
            "--auth-token-file", str(tmp_path / "token"), str(png),
        ]  # fmt: skip
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert "model digits version 1" in out and len(out.strip().splitlines()) == 4
        assert cli.main([*args[:-3], str(png)]) == 2
        assert "HTTP 401" in capsys.readouterr().err
    finally:
        server.stop(0)


def test_large_json_is_refused_before_parsing(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.inference import rest_body

    monkeypatch.setattr(rest_body, "MAX_JSON_BYTES", 100)
    status, _, body = call(f"{base}/v2/models/digits/infer", infer_json(X))
    assert status == 413 and "binary_data_size" in json.loads(body)["error"]


def test_stop_closes_the_http_port_and_its_thread(tmp_path: Path) -> None:
    add_model(tmp_path, "digits")
    server = start(tmp_path)
    assert server.http is not None
    port, thread = server.http.port, server.http._thread
    assert call(f"http://127.0.0.1:{port}/v2/health/ready")[0] == 200
    server.stop(0)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        call(f"http://127.0.0.1:{port}/v2/health/ready")


def test_a_busy_http_port_fails_the_start_cleanly(tmp_path: Path) -> None:
    import socket

    add_model(tmp_path, "digits")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
        server = InferenceServer(
            tmp_path, options, metrics=None, http=HttpOptions(host="127.0.0.1", port=port)
        )
        with pytest.raises(OSError, match="cannot listen for HTTP"):
            server.start()
    assert server.repository.models() == []  # released again


def test_calls_past_max_concurrent_are_refused_and_probes_are_not() -> None:
    """--max-concurrent-requests over REST: a call past the limit is 429 at once, with the
    reason; health probes neither count nor wait; the slot comes back when a call ends."""
    import asyncio
    import threading

    from services.inference.rest_app import RestApp
    from services.inference.tensors import InferResult

    release = threading.Event()

    class SlowCore:
        max_bytes_elements = 16
        counters = None  # no ignored-parameter counts

        def live(self) -> bool:
            return True

        def ready(self) -> bool:
            return True

        async def infer_async(self, request: Any, deadline: Any) -> InferResult:
            while not release.is_set():  # a model still running
                await asyncio.sleep(0.01)
            return InferResult(request.model, "1", request.id)

    app = RestApp(SlowCore(), HttpOptions(max_concurrent=1))  # type: ignore[arg-type]
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [0.5]}]}
    ).encode()

    async def request(path: str, method: str = "POST", payload: bytes = b"") -> int:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "method": method, "headers": []}
        await app(scope, receive, send)
        if sent[0]["status"] == 429:
            assert b"--max-concurrent-requests" in sent[1]["body"]
        return int(sent[0]["status"])

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(request("/v2/models/m/infer", payload=body))
        while app._in_flight == 0:
            assert not first.done(), f"the first request ended early: {first.result()}"
            await asyncio.sleep(0.01)
        refused = await request("/v2/models/m/infer", payload=body)
        probes = [await request(p, "GET") for p in ("/v2/health/live", "/v2/health/ready")]
        release.set()
        done = await first
        again = await request("/v2/health/ready", "GET")
        return [refused, *probes, done, again, app._in_flight]

    try:
        assert asyncio.run(scenario()) == [429, 200, 200, 200, 200, 0]
    finally:
        release.set()
        app.close()
