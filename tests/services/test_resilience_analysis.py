"""Issue 15, item 8: idle WatchRun streams must not freeze `stride serve-analysis`.

The server runs as a subprocess with its default limits (64 handler threads, 32
streams). 66 WatchRun streams follow a run that never moves; meanwhile a probe on
its own connection calls health and ListRuns every 100 ms with a 1 s deadline.
Before the fix the 66 streams took all 64 handler threads and the probe timed
out; now 32 streams are served on threads of their own and 34 are refused at once
(RESOURCE_EXHAUSTED), and the probe never waits. The idle timeout that ends such
streams is tested in tests/services/common/test_lanes.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.attacks import Probe, idle_streams
from bench.servers import free_port, rss_mb, stop, wait_ready
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc
from tests.services.analysis.runstore import epoch_line, run_config, write_run

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 66  # the count: more than the 64 handler threads
MAX_STREAMS = 32  # services.common.streams.DEFAULT_MAX_STREAMS


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    runs = tmp_path_factory.mktemp("runs")
    write_run(runs, "live", "stalled", config=run_config("adam", 1), epochs=[epoch_line(1, 0.5)])
    port = free_port()
    command = [
        sys.executable, "-m", "stride.cli", "serve-analysis", "--runs", str(runs),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc, timeout=90)
        yield port, proc.pid
    finally:
        stop(proc)


def test_idle_watch_run_streams_cannot_freeze_the_server(analysis: tuple[int, int]) -> None:
    port, pid = analysis
    address = f"127.0.0.1:{port}"

    def watch(ch: grpc.Channel, _: Any) -> Any:
        request = pb.WatchRunRequest(experiment="live", run_id="stalled", poll_seconds=5)
        return pb_grpc.AnalysisServiceStub(ch).WatchRun(request, timeout=60)

    with grpc.insecure_channel(address) as probe_channel:
        health = health_pb2_grpc.HealthStub(probe_channel)
        stub = pb_grpc.AnalysisServiceStub(probe_channel)
        checks = {
            "health": lambda timeout: health.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            ),
            "ListRuns": lambda timeout: stub.ListRuns(
                pb.ListRunsRequest(experiment="live"), timeout=timeout
            ),
        }
        for check in checks.values():
            check(5.0)  # warm
        before = rss_mb(pid)
        with Probe(checks, rss_of=pid) as probe:
            outcome = idle_streams(
                watch, lambda: grpc.insecure_channel(address), STREAMS, hold=3.0, name="WatchRun"
            )
    print(
        f"\n{outcome}; probe slowest {probe.worst:.3f} s; RSS {before:.0f} -> {probe.peak_rss:.0f}"
    )
    assert not probe.failures, probe.failures[:5]
    assert probe.worst < 1.0
    # Still open at the end ("open"), or refused at once.
    assert outcome.codes == Counter(open=MAX_STREAMS, RESOURCE_EXHAUSTED=STREAMS - MAX_STREAMS)
    assert probe.peak_rss - before < 30
