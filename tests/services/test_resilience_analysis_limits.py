"""Issue 25, items 5 and 11: what parsed runs may cost, and a SIGTERM with renders queued.

Both servers run as Deployment stride-analysis runs them (bench/deployed.py: the
manifest's flags, TLS, a token, the pod's memory limit as a cgroup where the machine
allows).

Item 5. The server with STRIDE_RUN_MEMORY_MB=48, over an experiment of five legal
runs, each a metrics.jsonl of 5 MB of short gradient norms that parses into about
15 MB. Before the fix the cache kept up to 512 runs whatever they cost: after a GetRun
of each, all five stayed resident (the server grew by about 160 MiB), and a few large
runs took a pod past its memory limit on every restart. Now the parsed runs alive in
the server never pass 48 MiB (the cache gives them up first), so its resident memory
grows by far less than the five would take; and a run that alone would take more than
a client may hold (half the budget) is refused with a message naming the run, the
limit and the flag, and listed apart.

Item 11. The server runs with the deployment's grace period (10 s) and one client
queues five large figures. Before the fix SIGTERM waited for every queued figure to be
drawn (65 s with six). Now the queued ones are refused at once (UNAVAILABLE, long
before the grace period ends), the one being drawn finishes or stops at the end of the
grace period, and the process exits soon after, within the pod's 30 s.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.analysis_attacks import (
    large_runs,
    metrics_lines,
    render_request,
    render_runs,
    write_run,
)
from bench.attacks import Probe
from bench.deployed import Served, pod, serve_analysis
from bench.servers import rss_mb
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc
from tests.deploy.manifests import option

MEMORY_MB = 48
PER_CLIENT = 5  # half of the render lane's 9 places


def grace_period() -> float:
    """deploy/'s --grace-period for serve-analysis."""
    return float(option(pod("stride-analysis").argv, "--grace-period") or 10)


@pytest.fixture
def big_store(tmp_path: Path) -> Iterator[tuple[Served, list[str]]]:
    runs = tmp_path / "runs"
    ids = large_runs(runs, "big", 5, megabytes=5)
    large_runs(runs, "alone", 1, megabytes=20)  # about 65 MB parsed: over 48 MiB by itself
    write_run(runs, "small", "r", lines=metrics_lines(3, 4))
    served = serve_analysis(tmp_path / "pod", runs, {"STRIDE_RUN_MEMORY_MB": str(MEMORY_MB)})
    try:
        yield served, ids
    finally:
        served.stop()


def test_parsed_runs_are_bounded_by_what_they_take_in_memory(
    big_store: tuple[Served, list[str]],
) -> None:
    served, ids = big_store
    pid, auth = served.pid, served.metadata
    with served.channel() as channel:
        stub = pb_grpc.AnalysisServiceStub(channel)
        # Warm the code paths on a small run: nothing large has been parsed yet.
        stub.GetRun(pb.GetRunRequest(experiment="small", run_id="r"), timeout=60, metadata=auth)
        before = rss_mb(pid)
        with Probe({}, rss_of=pid, period=0.05) as probe:
            for run_id in ids * 2:  # the second round finds what the cache kept
                request = pb.GetRunRequest(experiment="big", run_id=run_id, last_epoch=1)
                answer = stub.GetRun(request, timeout=120, metadata=auth)
                assert answer.run.run_id == run_id and len(answer.history) == 1
            with pytest.raises(grpc.RpcError) as info:
                alone = pb.GetRunRequest(experiment="alone", run_id="big0")
                stub.GetRun(alone, timeout=120, metadata=auth)
            listing = stub.ListRuns(
                pb.ListRunsRequest(experiment="alone"), timeout=120, metadata=auth
            )
            stub.ListExperiments(pb.ListExperimentsRequest(), timeout=120, metadata=auth)
        after = rss_mb(pid)
    grown = probe.peak_rss - before
    print(f"\nRSS {before:.0f} -> peak {probe.peak_rss:.0f} -> {after:.0f} MiB (+{grown:.0f})")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = info.value.details()
    assert "'big0' of 'alone'" in message and "24.0 MiB" in message, message
    assert "--run-memory-mb" in message, message
    [skipped] = listing.malformed
    assert skipped.run_id == "big0" and skipped.reason.startswith("not read:"), skipped
    # The five runs take about 75 MB parsed; the budget keeps 48 MiB of them alive, with
    # the bytes of the file being parsed among them.
    assert grown < 100, f"resident memory grew by {grown:.0f} MiB"
    served.check_memory()


@pytest.fixture
def render_server(tmp_path: Path) -> Iterator[Served]:
    runs = tmp_path / "runs"
    render_runs(runs, "render", 24)
    served = serve_analysis(tmp_path / "pod", runs)
    try:
        yield served
    finally:
        served.stop()


def test_sigterm_refuses_queued_renders_at_once_and_exits_within_the_grace_period(
    render_server: Served,
) -> None:
    proc, auth, grace = render_server.server.proc, render_server.metadata, grace_period()
    request = render_request("render", 2400)
    ended: list[tuple[str, float]] = []
    lock = threading.Lock()
    with render_server.channel() as channel:
        stub = pb_grpc.AnalysisServiceStub(channel)
        start = time.monotonic()
        stub.RenderComparison(request, timeout=300, metadata=auth)  # one figure: its time here
        one = time.monotonic() - start
        calls = [
            stub.RenderComparison.future(request, timeout=300, metadata=auth)
            for _ in range(PER_CLIENT)
        ]

        def done(call: grpc.Future) -> None:
            with lock:
                ended.append((call.code().name, time.monotonic()))

        for call in calls:
            call.add_done_callback(done)
        time.sleep(0.5)  # let them arrive: one drawing, four waiting
        sigterm = time.monotonic()
        proc.terminate()
        code = proc.wait(timeout=grace + one + 60)
        exited = time.monotonic() - sigterm
        for call in calls:
            with contextlib.suppress(grpc.RpcError):
                call.result(timeout=30)
    deadline = time.monotonic() + 10
    while len(ended) < PER_CLIENT and time.monotonic() < deadline:
        time.sleep(0.01)  # the last done-callbacks run on gRPC's thread
    codes = Counter(name for name, _ in ended)
    # Answered UNAVAILABLE before the grace period ends: refused, not held for it.
    refused = sorted(at - sigterm for name, at in ended if name == "UNAVAILABLE")
    print(
        f"\none figure {one:.2f} s; {dict(codes)}; UNAVAILABLE after "
        f"{[round(t, 2) for t in refused]} s; exited {exited:.2f} s after SIGTERM"
    )
    assert code == 0
    assert sum(codes.values()) == PER_CLIENT
    # The queued figures were refused at once, not drawn. The one being drawn finished
    # (OK) or, drawing past the grace period, was cancelled with the server's calls then.
    assert len([t for t in refused if t < grace]) >= PER_CLIENT - 1, refused
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
    # Before: every queued figure was drawn before the process left (4 x one more), past
    # the pod's grace period; now it leaves within it (the kubelet's SIGKILL comes then).
    assert exited < render_server.server.pod.grace_period, f"exited {exited:.1f} s after SIGTERM"
