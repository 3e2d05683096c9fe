"""`stride serve` and `stride predict`: options from flags and env, SIGTERM drain, TLS, tokens."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.server import InferenceServer
from stride import cli
from stride.commands import serve
from tests.services.common.certs import make_certs
from tests.services.inference.onnx_models import add_model, slow_model

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_option_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "STRIDE_REPOSITORY": str(tmp_path),
        "STRIDE_PORT": "9001",
        "STRIDE_METRICS_PORT": "9002",
        "STRIDE_HEALTH_PORT": "9003",
        "STRIDE_GRACE_PERIOD": "3.5",
        "STRIDE_POLL_INTERVAL": "2",
        "STRIDE_AUTH_TOKEN_FILE": str(tmp_path / "token"),
        "STRIDE_MAX_MESSAGE_MB": "8",
        "STRIDE_MAX_CONCURRENT_REQUESTS": "5",
        "STRIDE_THREADS": "1",
        "STRIDE_SPIN": "on",
        "STRIDE_HANDLER_THREADS": "12",
        "STRIDE_MAX_STREAMS": "6",
        "STRIDE_STREAM_IDLE_TIMEOUT": "30",
        "STRIDE_MAX_BYTES_ELEMENTS": "99",
        "STRIDE_MAX_IMAGE_SCALE": "4",
        "STRIDE_MAX_DECODES": "3",
        "STRIDE_METRICS_MAX_CONNECTIONS": "5",
        "STRIDE_METRICS_TIMEOUT": "2.5",
        "STRIDE_METRICS_TLS": "on",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = parse([])
    assert (args.repository, args.port, args.metrics_port, args.health_port) == (
        tmp_path,
        9001,
        9002,
        9003,
    )
    assert (args.grace_period, args.poll_interval, args.max_message_mb) == (3.5, 2.0, 8.0)
    assert (args.max_concurrent_requests, args.threads, args.spin) == (5, 1, "on")
    assert (args.max_bytes_elements, args.max_image_scale, args.max_decodes) == (99, 4.0, 3)
    assert (args.metrics_max_connections, args.metrics_timeout, args.metrics_tls) == (5, 2.5, "on")
    assert parse(["--port", "7000"]).port == 7000  # a flag beats its variable
    (tmp_path / "token").write_text("tok\n")
    options = serve.server_options(args)
    assert options.auth_token == "tok" and options.health_port == 9003
    # --threads is ONNX Runtime's; the gRPC handler threads are --handler-threads.
    assert (options.handler_threads, options.max_streams, options.stream_idle_timeout) == (
        12,
        6,
        30.0,
    )
    assert (options.max_health_watches, options.max_connections) == (16, 512)
    assert parse([]).model_control == "none"  # load and unload refused unless enabled
    assert parse(["--model-control", "explicit"]).model_control == "explicit"
    monkeypatch.setenv("STRIDE_PORT", "eighty")
    with pytest.raises(SystemExit):
        parse([])
    monkeypatch.setenv("STRIDE_PORT", "9001")
    monkeypatch.delenv("STRIDE_SPIN")
    assert parse([]).spin == "off"
    monkeypatch.setenv("STRIDE_SPIN", "maybe")
    with pytest.raises(SystemExit):
        parse([])


def test_the_threaded_server_option_is_gone_with_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse(["--grpc-server", "threads"])
    assert "'threads' was removed" in capsys.readouterr().err
    assert parse(["--grpc-server", "asyncio"]).grpc_server == "asyncio"  # deprecated, ignored
    with pytest.raises(SystemExit):
        parse(["--model-control", "poll"])


def test_tls_options_must_come_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        serve.server_options(parse(["--tls-cert", str(tmp_path / "c.pem")]))
    with pytest.raises(ValueError, match="needs --tls-cert"):
        serve.server_options(parse(["--tls-ca", str(tmp_path / "ca.pem")]))
    with pytest.raises(OSError):
        serve.server_options(
            parse(["--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")])
        )


def _png(tmp_path: Path, name: str, value: int) -> Path:
    from PIL import Image

    path = tmp_path / name
    Image.new("L", (16, 16), value).save(path)
    return path


def test_predict_prints_top_k_labels(
    server: InferenceServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [_png(tmp_path, "a.png", 10), _png(tmp_path, "b.png", 240)]
    code = cli.main(
        [
            "predict",
            "--server",
            f"127.0.0.1:{server.port}",
            "--model",
            "digits",
            "--top-k",
            "2",
            *map(str, images),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "model digits version 1"
    assert out[1].endswith("a.png") and out[4].endswith("b.png")
    first = out[2].split()
    assert 0 < float(first[0]) <= 1 and first[2] in {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    }
    assert float(out[2].split()[0]) >= float(out[3].split()[0])


def test_predict_errors_are_one_line(
    server: InferenceServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _png(tmp_path, "a.png", 10)
    code = cli.main(
        ["predict", "--server", f"127.0.0.1:{server.port}", "--model", "nope", str(image)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("stride predict: error:") and "NOT_FOUND" in err and "nope" in err


def test_serve_with_mutual_tls_and_token_then_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certs(tmp_path)
    add_model(tmp_path / "repo", "digits")
    (tmp_path / "token").write_text("s3cret\n")
    args = parse([
        "--repository", str(tmp_path / "repo"), "--host", "127.0.0.1", "--port", "0",
        "--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]),
        "--tls-ca", str(certs["ca.pem"]), "--auth-token-file", str(tmp_path / "token"),
    ])  # fmt: skip
    server = InferenceServer(args.repository, serve.server_options(args), metrics=None).start()
    image = str(_png(tmp_path, "a.png", 99))
    base = [
        "predict",
        "--server",
        f"localhost:{server.port}",
        "--model",
        "digits",
        "--tls-ca",
        str(certs["ca.pem"]),
    ]
    mtls = ["--tls-cert", str(certs["client.pem"]), "--tls-key", str(certs["client.key"])]
    try:
        assert cli.main([*base, *mtls, "--auth-token-file", str(tmp_path / "token"), image]) == 0
        assert "model digits version 1" in capsys.readouterr().out
        assert cli.main([*base, *mtls, image]) == 2  # no token
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert (
            cli.main([*base, "--auth-token-file", str(tmp_path / "token"), image]) == 2
        )  # no client cert
        assert "UNAVAILABLE" in capsys.readouterr().err
    finally:
        server.stop(0)


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return page.read().decode()


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight_and_exits_zero(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    slow_model(repo, depth=120)
    (tmp_path / "token").write_text("tok")
    port, health_port, metrics_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        STRIDE_REPOSITORY=str(repo),
        STRIDE_HOST="127.0.0.1",
        STRIDE_PORT=str(port),
        STRIDE_HEALTH_PORT=str(health_port),
        STRIDE_METRICS_PORT=str(metrics_port),
        STRIDE_HTTP_PORT="-1",
        STRIDE_GRACE_PERIOD="20",
        STRIDE_AUTH_TOKEN_FILE=str(tmp_path / "token"),
    )
    proc = subprocess.Popen([sys.executable, "-m", "stride.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if _health(health_port) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        x = np.ones((64, 1024), np.float32)
        request = pb.ModelInferRequest(model_name="slow")
        request.inputs.add(name="input", datatype="FP32", shape=[64, 1024])
        request.raw_input_contents.append(x.tobytes())
        request.outputs.add(name="logits")
        result: dict[str, object] = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            token = (("authorization", "Bearer tok"),)
            stub.ModelInfer(request, metadata=token, timeout=60)  # warm the connection and model

            def call() -> None:
                try:
                    result["response"] = stub.ModelInfer(request, metadata=token, timeout=60)
                except grpc.RpcError as exc:
                    result["error"] = exc

            worker = threading.Thread(target=call)
            started = time.monotonic()
            worker.start()
            pending = 'nv_inference_pending_request_count{model="slow",version="1"} 1'
            while pending not in _metrics(metrics_port) and time.monotonic() - started < 30:
                time.sleep(0.005)  # until the request is certainly in flight
            proc.send_signal(signal.SIGTERM)
            saw_not_serving = False
            while worker.is_alive() and time.monotonic() - started < 30:
                with contextlib.suppress(grpc.RpcError):
                    saw_not_serving |= (
                        _health(health_port) == health_pb2.HealthCheckResponse.NOT_SERVING
                    )
                time.sleep(0.02)
            worker.join(30)
        assert "error" not in result, result.get("error")
        response = result["response"]
        assert isinstance(response, pb.ModelInferResponse)
        out = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(64, 1024)
        assert np.allclose(out, 1.0)
        assert saw_not_serving
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_docs_list_every_option_with_its_variable_and_default() -> None:
    docs = (ROOT / "docs" / "serving.md").read_text()
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or flag == "--help":
            continue
        env = "STRIDE_" + flag[2:].upper().replace("-", "_")
        rows = [
            line
            for line in docs.splitlines()
            if line.startswith("| `--") and f"`{flag}" in line.split("|")[1]
        ]
        assert rows, f"docs/serving.md has no row for {flag}"
        assert env in rows[0], f"the row of {flag} does not name {env}"
