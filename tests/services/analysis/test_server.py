"""The analysis server through a real port: status codes, streaming, health, auth, the command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runstore import RunStore
from services.analysis.server import AnalysisServer
from services.analysis.servicer import SERVICE_NAME
from services.common import ServerOptions
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def server(known_store: Path) -> Iterator[AnalysisServer]:
    (known_store / "opt" / "broken").mkdir()
    (known_store / "opt" / "broken" / "summary.json").write_text('{"status": "completed"}')
    srv = AnalysisServer(
        RunStore(str(known_store)), ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    )
    srv.start()  # returns the server typed as ManagedServer; keep the AnalysisServer
    yield srv
    srv.stop(0)


@pytest.fixture
def stub(server: AnalysisServer) -> Iterator[pb_grpc.AnalysisServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.AnalysisServiceStub(channel)


def test_compare_and_render_through_a_port(stub: pb_grpc.AnalysisServiceStub) -> None:
    selection = pb.RunSelection(experiment="opt")
    out = stub.CompareRuns(pb.CompareRunsRequest(selection=selection), timeout=20)
    assert list(out.ranking) == ["adam", "sgd"]
    assert out.groups[0].epochs_to_target.mean == 2.0
    assert [s.run_id for s in out.skipped] == ["broken"]
    png = stub.RenderComparison(
        pb.RenderComparisonRequest(selection=selection, width=300, height=200), timeout=20
    ).png
    assert png_size(png) == (300, 200)


@pytest.mark.parametrize(
    ("call", "code", "text"),
    [
        (lambda s: s.GetRun(pb.GetRunRequest(experiment="opt", run_id="x")), "NOT_FOUND", "'x'"),
        (lambda s: s.ListRuns(pb.ListRunsRequest(experiment="nope")), "NOT_FOUND", "nope"),
        (
            lambda s: s.GetRun(pb.GetRunRequest(experiment="opt", run_id="broken")),
            "FAILED_PRECONDITION",
            "config.json is missing",
        ),
        (
            lambda s: s.GetRun(pb.GetRunRequest(experiment="opt", run_id="../x")),
            "INVALID_ARGUMENT",
            "not a valid name",
        ),
        (
            lambda s: s.ListRuns(pb.ListRunsRequest(experiment="opt", statuses=["done"])),
            "INVALID_ARGUMENT",
            "allowed: completed",
        ),
        (
            lambda s: s.CompareRuns(
                pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt", where=["seed=9"]))
            ),
            "NOT_FOUND",
            "no run of experiment 'opt'",
        ),
        (
            lambda s: list(s.WatchRun(pb.WatchRunRequest(experiment="opt", run_id="zz"))),
            "NOT_FOUND",
            "'zz'",
        ),
    ],
)
def test_errors_map_to_status_codes(
    stub: pb_grpc.AnalysisServiceStub,
    call: Callable[[pb_grpc.AnalysisServiceStub], object],
    code: str,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(stub)
    assert info.value.code() == getattr(grpc.StatusCode, code)
    assert text in info.value.details()


def test_a_bad_store_never_takes_the_server_down(
    known_store: Path, stub: pb_grpc.AnalysisServiceStub
) -> None:
    (known_store / "opt" / "worse").mkdir()
    (known_store / "opt" / "worse" / "config.json").write_bytes(b"\x80\x81garbage")
    (known_store / "opt" / "worse" / "metrics.jsonl").write_text("{}\n")
    out = stub.ListRuns(pb.ListRunsRequest(experiment="opt"), timeout=10)
    assert {m.run_id for m in out.malformed} == {"broken", "worse"}
    assert len(out.runs) == 6


def test_watch_run_streams_epochs_as_they_are_written(
    known_store: Path, stub: pb_grpc.AnalysisServiceStub
) -> None:
    folder = write_run(known_store, "live", "r", config=run_config("adam", 1))

    def write() -> None:
        with open(folder / "metrics.jsonl", "a") as f:
            for epoch in (1, 2, 3):
                time.sleep(0.1)
                f.write(json.dumps(epoch_line(epoch, 0.3 * epoch)) + "\n")
                f.flush()
        time.sleep(0.1)
        (folder / "summary.json").write_text(json.dumps(summary(0.9, 3)))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    arrivals = []
    request = pb.WatchRunRequest(experiment="live", run_id="r", poll_seconds=0.02)
    for event in stub.WatchRun(request, timeout=20):
        arrivals.append((event.WhichOneof("event"), time.monotonic()))
    writer.join()
    assert [kind for kind, _ in arrivals] == ["epoch", "epoch", "epoch", "summary"]
    # streamed as written, not all at the end
    assert arrivals[-1][1] - arrivals[0][1] > 0.2


def test_watch_run_is_bounded_by_the_deadline(
    known_store: Path, stub: pb_grpc.AnalysisServiceStub
) -> None:
    write_run(
        known_store, "live", "stalled", config=run_config("adam", 1), epochs=[epoch_line(1, 0.5)]
    )
    request = pb.WatchRunRequest(experiment="live", run_id="stalled", poll_seconds=0.05)
    received = []
    start = time.monotonic()
    try:
        for event in stub.WatchRun(request, timeout=0.5):
            received.append(event.epoch.epoch)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received == [1]
    assert time.monotonic() - start < 5


def test_health_reflection_and_token(known_store: Path, tmp_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    options = ServerOptions(host="127.0.0.1", port=0, health_port=0, auth_token="s3cret")
    srv = AnalysisServer(RunStore(str(known_store)), options).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.AnalysisServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListExperiments(pb.ListExperimentsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            out = stub.ListExperiments(
                pb.ListExperimentsRequest(),
                timeout=5,
                metadata=[("authorization", "Bearer s3cret")],
            )
            assert [e.name for e in out.experiments] == ["opt"]
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=5,
                metadata=[("authorization", "Bearer s3cret")],
            )
            names = {s.name for r in replies for s in r.list_services_response.service}
            assert SERVICE_NAME in names
        assert srv.health_port
        with grpc.insecure_channel(f"127.0.0.1:{srv.health_port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        srv.stop(0)


def test_serve_analysis_command_serves_and_drains_on_sigterm(
    known_store: Path, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("tok\n")
    env = {
        **os.environ,
        "STRIDE_RUNS": str(known_store),
        "STRIDE_PORT": "0",
        "STRIDE_AUTH_TOKEN_FILE": str(token),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stride.cli", "serve-analysis", "--host", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            stub = pb_grpc.AnalysisServiceStub(channel)
            out = stub.CompareRuns(
                pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt")),
                timeout=20,
                metadata=[("authorization", "Bearer tok")],
            )
            assert list(out.ranking) == ["adam", "sgd"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
