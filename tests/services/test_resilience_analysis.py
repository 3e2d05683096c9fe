"""Issue 15, items 7-12: no client can starve `stride serve-analysis`.

Item 8, idle WatchRun streams:

The server runs as Deployment stride-analysis runs it (bench/deployed.py: the
manifest's flags, TLS, a token, the pod's memory limit as a cgroup where the machine
allows) with its default limits (64 handler threads, 32 streams). 66 WatchRun streams
follow a run that never moves; meanwhile a probe on its own connection calls health
and ListRuns every 100 ms (with a generous deadline: 10 s). Before the fix the 66
streams took all 64 handler threads and the probe timed out; now 32 streams are
served on threads of their own and 34 are refused at once (RESOURCE_EXHAUSTED), and
the probe is answered. The idle timeout that ends such
streams is tested in tests/services/common/test_lanes.py.

Items 7 and 9-12 run the same way, each while the probe calls health and ListRuns
every 100 ms: a WatchRun polling every NaN seconds, a store holding a 5,000-digit
integer, a symlink out of the store, a FIFO named metrics.jsonl and a metrics file over
the size limit, and comparisons of 300 groups or 10^6 bootstrap samples. Each attack
must get its clear answer at once, the probe must never wait a second, and the
server's memory must stay within 30 MiB of where it was.

Issue 25, items 6 and 10, against the same server:

- 16 WatchRun streams poll a run every 10 ms whose last line (900 kB) is being written
  and never ends. Before the fix each poll read the line again (16 x 900 kB x 100 polls
  a second); now a poll that finds the file unchanged reads nothing: the server's
  bytes read (/proc/PID/io) stay near one read of the line per stream. A last line over
  the 1 MiB a line may be ends the streams with FAILED_PRECONDITION at once.
- 12 large RenderComparison calls from one client with a short deadline: before the
  fix all 12 queued behind one lock and were drawn to the end after their clients had
  gone; now one client holds at most 5 of the render lane's 9 places, the other 7 are
  refused at once, health and ListExperiments answer throughout, and the work stops
  when the clients have gone: the server's CPU seconds after the last call ended stay
  well under what one figure costs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.analysis_attacks import (
    cpu_seconds,
    read_bytes,
    render_request,
    render_runs,
    slow_renders,
    unfinished_line,
    wait_idle,
    watchers,
)
from bench.attacks import Probe, idle_streams
from bench.deployed import TOKEN, Served, serve_analysis
from bench.servers import rss_mb
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 66  # the count: more than the 64 handler threads
MAX_STREAMS = 32  # services.common.streams.DEFAULT_MAX_STREAMS
TAIL_BYTES = 900_000  # an unfinished last line, under the 1 MiB a line may be
RENDER_SIDE = 2400  # px: a figure of 24 curves that takes a while to draw
RENDER_PLACES = 9  # the render lane: 1 drawing + --max-queued-renders 8
PER_CLIENT = 5  # half of the places, rounded up
DEADLINE_S = 10.0  # the well-behaved calls' deadline: for a machine at twice its cores' load
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    runs = tmp_path_factory.mktemp("runs")
    write_run(runs, "live", "stalled", config=run_config("adam", 1), epochs=[epoch_line(1, 0.5)])
    hostile_store(runs, tmp_path_factory.mktemp("outside"))
    unfinished_line(runs, "live", "tail", TAIL_BYTES)
    unfinished_line(runs, "live", "longline", 2 * 2**20)
    render_runs(runs, "render", 24)
    served = serve_analysis(tmp_path_factory.mktemp("pod"), runs)
    try:
        yield served
    finally:
        served.stop()


def test_idle_watch_run_streams_cannot_freeze_the_server(analysis: Served) -> None:
    pid = analysis.pid

    def watch(ch: grpc.Channel, _: Any) -> Any:
        request = pb.WatchRunRequest(experiment="live", run_id="stalled", poll_seconds=5)
        return pb_grpc.AnalysisServiceStub(ch).WatchRun(request, timeout=60, metadata=AUTH)

    with analysis.channel() as probe_channel:
        health = health_pb2_grpc.HealthStub(probe_channel)
        stub = pb_grpc.AnalysisServiceStub(probe_channel)
        checks = {
            "health": lambda timeout: health.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            ),
            "ListRuns": lambda timeout: stub.ListRuns(
                pb.ListRunsRequest(experiment="live"), timeout=timeout, metadata=AUTH
            ),
        }
        for check in checks.values():
            check(5.0)  # warm
        before = rss_mb(pid)
        with Probe(checks, rss_of=pid, timeout=DEADLINE_S) as probe:
            outcome = idle_streams(watch, analysis.channel, STREAMS, hold=3.0, name="WatchRun")
    print(
        f"\n{outcome}; probe slowest {probe.worst:.3f} s; RSS {before:.0f} -> {probe.peak_rss:.0f}"
    )
    assert not probe.failures, probe.failures[:5]
    # Still open at the end ("open"), or refused at once.
    assert outcome.codes == Counter(open=MAX_STREAMS, RESOURCE_EXHAUSTED=STREAMS - MAX_STREAMS)
    assert probe.peak_rss - before < 30


def hostile_store(runs: Path, outside: Path) -> None:
    """Experiment `hostile`: one good run and one of each kind of bad file; `many`: 300
    finished runs, one per seed."""
    done = summary(0.9, 1)
    write_run(
        runs,
        "hostile",
        "good",
        config=run_config("adam", 1),
        epochs=[epoch_line(1, 0.5)],
        summary=done,
    )
    big_int = write_run(runs, "hostile", "bigint", config=run_config("adam", 2))
    (big_int / "summary.json").write_text(
        '{"status": "completed", "epochs_run": ' + "9" * 5000 + "}"
    )
    (outside / "config.json").write_text(json.dumps({"config": {"secret": "outside"}}))
    link = runs / "hostile" / "link"
    link.mkdir()
    os.symlink(outside / "config.json", link / "config.json")
    fifo = write_run(runs, "hostile", "fifo", config=run_config("adam", 3))
    (fifo / "metrics.jsonl").unlink()
    os.mkfifo(fifo / "metrics.jsonl")
    huge = write_run(runs, "hostile", "huge", config=run_config("adam", 4))
    with open(huge / "metrics.jsonl", "wb") as f:
        f.truncate(65 * 2**20)  # over the 64 MiB default: refused from its size, not read
    for seed in range(300):
        write_run(
            runs,
            "many",
            f"r{seed}",
            config=run_config("adam", seed),
            epochs=[epoch_line(1, 0.5)],
            summary=done,
        )


def checks(channel: grpc.Channel) -> dict[str, Any]:
    """The well-behaved client's calls: health and ListExperiments (the cheap calls)."""
    health = health_pb2_grpc.HealthStub(channel)
    stub = pb_grpc.AnalysisServiceStub(channel)
    return {
        "health": lambda t: health.Check(health_pb2.HealthCheckRequest(), timeout=t),
        "ListExperiments": lambda t: stub.ListExperiments(
            pb.ListExperimentsRequest(), timeout=t, metadata=AUTH
        ),
    }


def test_watchers_of_an_unfinished_line_do_not_read_it_again(
    analysis: Served,
) -> None:
    pid = analysis.pid
    address = f"127.0.0.1:{analysis.port('grpc')}"
    with analysis.channel() as probe_channel:
        probe_checks = checks(probe_channel)
        for check in probe_checks.values():
            check(30.0)  # warm: the store is read and cached
        before, read_before = rss_mb(pid), read_bytes(pid)
        ca = analysis.ca.read_bytes()
        with Probe(probe_checks, rss_of=pid, timeout=DEADLINE_S) as probe:
            outcome = watchers(address, "live", "tail", 16, hold=3.0, metadata=AUTH, ca=ca)
            long_line = watchers(address, "live", "longline", 8, hold=30.0, metadata=AUTH, ca=ca)
        read = (read_bytes(pid) - read_before) / 2**20
    print(
        f"\n{outcome}; {long_line}; read {read:.0f} MiB; probe slowest {probe.worst:.3f} s; "
        f"RSS {before:.0f} -> {probe.peak_rss:.0f} MiB"
    )
    # Each stream got epoch 1 and then waited for the line until its deadline (the server
    # ends it at the deadline: OK or DEADLINE_EXCEEDED, whichever side is first).
    assert outcome.codes["DEADLINE_EXCEEDED"] + outcome.codes["OK"] == 16, outcome
    assert long_line.codes == Counter(FAILED_PRECONDITION=8)  # ended at once, not at 30 s
    # Before: 16 streams x 100 polls a second x 900 kB, gigabytes in 3 s. Now about one
    # read of the line per stream (15 MiB), plus what the probe's listings read.
    assert read < 50, f"{read:.0f} MiB read"
    assert not probe.failures, probe.failures[:5]
    assert probe.peak_rss - before < 30


def test_slow_renders_queue_within_a_bound_and_stop_when_their_clients_leave(
    analysis: Served,
) -> None:
    pid = analysis.pid
    request = render_request("render", RENDER_SIDE)
    with (
        analysis.channel() as attacker,
        analysis.channel() as probe_channel,
    ):
        stub = pb_grpc.AnalysisServiceStub(attacker)
        cpu, start = cpu_seconds(pid), time.monotonic()
        stub.RenderComparison(request, timeout=300, metadata=AUTH)  # one figure: its cost here
        one_cpu, one_wall = cpu_seconds(pid) - cpu, time.monotonic() - start
        deadline = max(1.0, one_wall / 2)  # the clients leave while the first is drawn
        probe_checks = checks(probe_channel)
        with Probe(probe_checks, rss_of=pid, timeout=DEADLINE_S) as probe:
            outcome, ended = slow_renders(attacker, request, 12, timeout=deadline, metadata=AUTH)
        # CPU seconds spent once every client had gone, until the server is idle
        after = wait_idle(pid, busy_rate=one_cpu / one_wall)
        health = health_pb2_grpc.HealthStub(probe_channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    print(
        f"\none figure {one_cpu:.2f} CPU s ({one_wall:.2f} s); {outcome}; ended at "
        f"{[round(t, 2) for t in ended]}; CPU after the clients left {after:.2f} s; "
        f"probe slowest {probe.worst:.3f} s over {probe.calls} calls"
    )
    refused = 12 - PER_CLIENT
    assert outcome.codes["RESOURCE_EXHAUSTED"] == refused
    assert outcome.codes["DEADLINE_EXCEEDED"] + outcome.codes["OK"] == PER_CLIENT
    # Before: every queued figure was drawn to the end for nobody (11 x one_cpu). Now
    # the one being drawn stops at its next panel and the queued ones never start.
    assert after < 0.5 * one_cpu, f"{after:.2f} CPU s after the clients left"
    assert not probe.failures, probe.failures[:5]
    assert status == health_pb2.HealthCheckResponse.SERVING


def _attacks(stub: pb_grpc.AnalysisServiceStub) -> dict[str, Any]:
    def watch_nan() -> Any:
        request = pb.WatchRunRequest(experiment="live", run_id="stalled", poll_seconds=math.nan)
        return list(stub.WatchRun(request, timeout=DEADLINE_S, metadata=AUTH))

    def get(run: str) -> Any:
        request = pb.GetRunRequest(experiment="hostile", run_id=run)
        return stub.GetRun(request, timeout=DEADLINE_S, metadata=AUTH)

    def compare(group_by: str, samples: int = 0) -> Any:
        selection = pb.RunSelection(experiment="many", group_by=group_by)
        request = pb.CompareRunsRequest(selection=selection, bootstrap_samples=samples)
        return stub.CompareRuns(request, timeout=DEADLINE_S, metadata=AUTH)

    return {
        "7 WatchRun poll NaN": (watch_nan, "INVALID_ARGUMENT"),
        "9 5,000-digit integer": (lambda: get("bigint"), "FAILED_PRECONDITION"),
        "10 symlink out of the store": (lambda: get("link"), "FAILED_PRECONDITION"),
        "10 FIFO metrics.jsonl": (lambda: get("fifo"), "FAILED_PRECONDITION"),
        "11 file over the limit": (lambda: get("huge"), "FAILED_PRECONDITION"),
        "12 300 groups": (lambda: compare("seed"), "INVALID_ARGUMENT"),
        "12 10^6 bootstrap samples": (
            lambda: compare("optimizer.name", 1_000_000),
            "INVALID_ARGUMENT",
        ),
    }


def test_hostile_requests_and_run_files_get_clear_answers_at_once(
    analysis: Served,
) -> None:
    pid = analysis.pid
    with (
        analysis.channel() as attacker,
        analysis.channel() as probe_channel,
    ):
        stub = pb_grpc.AnalysisServiceStub(attacker)
        health = health_pb2_grpc.HealthStub(probe_channel)
        probe_stub = pb_grpc.AnalysisServiceStub(probe_channel)
        checks = {
            "health": lambda t: health.Check(health_pb2.HealthCheckRequest(), timeout=t),
            "ListRuns": lambda t: probe_stub.ListRuns(
                pb.ListRunsRequest(experiment="live"), timeout=t, metadata=AUTH
            ),
        }
        for check in checks.values():
            check(5.0)
        listing = stub.ListRuns(pb.ListRunsRequest(experiment="hostile"), timeout=30, metadata=AUTH)
        assert [r.run_id for r in listing.runs] == ["good"]  # the bad ones, listed apart
        assert sorted(m.run_id for m in listing.malformed) == ["bigint", "fifo", "huge", "link"]
        before = rss_mb(pid)
        got: dict[str, tuple[str, float]] = {}
        with Probe(checks, rss_of=pid, timeout=DEADLINE_S) as probe:
            for name, (attack, _) in _attacks(stub).items():
                start = time.monotonic()
                try:
                    attack()
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                got[name] = (code, time.monotonic() - start)
            stub.ListExperiments(  # never fails whole
                pb.ListExperimentsRequest(), timeout=30, metadata=AUTH
            )
    for name, (code, seconds) in got.items():
        print(f"\n{name}: {code} in {seconds:.3f} s", end="")
    print(f"\nprobe slowest {probe.worst:.3f} s; RSS {before:.0f} -> {probe.peak_rss:.0f} MiB")
    expected = {name: want for name, (_, want) in _attacks(stub).items()}
    # Each attack and each probe ran under a deadline: one that waited behind the others
    # for a busy server would have ended DEADLINE_EXCEEDED, failing the comparison.
    assert {name: code for name, (code, _) in got.items()} == expected
    assert not probe.failures, probe.failures[:5]
    assert probe.peak_rss - before < 30
