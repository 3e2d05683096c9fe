"""Issue 15's attacks on `stride serve` (items 1 to 6), each scaled down to seconds.

One server runs as Deployment stride-inference runs it (bench/deployed.py: the
manifest's flags, TLS and a token, the pod's memory limit as a cgroup where the
machine allows), with 8 handler threads and small limits set through the
environment (the manifest leaves them at their defaults), so that each attack reaches
them within seconds. For each attack (bench/attacks.py) a probe on its own connection
calls health and a normal ModelInfer every 100 ms; none of its calls may fail or miss
its deadline (generous: 10 s), the attack must get a clear status code, the server's
resident memory (/proc/<pid>/status) must stay within a stated bound of what it was
before the attack, and the pod's limit must never have been hit by an OOM kill.

Against the code before the fixes every test here failed: the repeated outputs
took the probe past 1 s (RSS to ~390 MiB); 3,000 made-up method names kept 10 MB;
8 idle streams took every handler thread and the probe timed out; the 4000x4000
PNGs were decoded and answered; 2 million empty BYTES elements took 4.8 s; every
half-open metrics connection kept a thread until the client left.

Item 7 sends items 1, 4 and 5 over REST (the same port serves both protocols), and
bodies and headers that never finish arriving; the probe then also calls REST's ready and infer.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench import attacks
from bench.attacks import Probe, Target
from bench.deployed import Served, serve_inference
from bench.repo import linear_model

HANDLER_THREADS = 8
IDLE_TIMEOUT_S = 2
METRICS_CONNECTIONS = 4
# Small limits, so that each attack reaches them within seconds.
LIMITS = {
    "STRIDE_HANDLER_THREADS": str(HANDLER_THREADS),
    "STRIDE_THREADS": "1",
    "STRIDE_MAX_STREAMS": "4",
    "STRIDE_STREAM_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S),
    "STRIDE_METRICS_MAX_CONNECTIONS": str(METRICS_CONNECTIONS),
    "STRIDE_METRICS_TIMEOUT": "1",
    "STRIDE_HTTP_BODY_TIMEOUT": "2",
    "STRIDE_HTTP_HEADER_TIMEOUT": "2",
}
PROBE_DEADLINE_S = 10.0  # a deadline for a machine at twice its cores' load, not a speed


@dataclass
class Pod:
    target: Target
    served: Served

    @property
    def rss(self) -> float:
        return self.served.rss()

    @property
    def threads(self) -> int:
        with open(f"/proc/{self.served.pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0

    def log(self) -> bytes:
        return self.served.server.log.read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    root = tmp_path_factory.mktemp("resilience")
    linear_model(root / "repository", "digits", max_batch=64)
    pod = serve_inference(root, root / "repository", LIMITS)
    try:
        target = Target(
            pod.port("grpc"), "digits", pod.token, pod.port("metrics"),
            http_port=pod.port("http"), ca=str(pod.ca),
        )  # fmt: skip
        with target.channel() as ch:  # warm the allocator before any baseline
            for check in attacks.inference_checks(target, ch).values():
                for _ in range(20):
                    check(PROBE_DEADLINE_S)
        yield Pod(target, pod)
    finally:
        pod.stop()


@dataclass
class Watch:
    probe: Probe
    rss_before: float  # MiB, just before the attack

    @property
    def growth(self) -> float:
        """Peak resident memory during the attack over what it was before (MiB)."""
        return self.probe.peak_rss - self.rss_before


@contextlib.contextmanager
def probed(served: Pod, rest: bool = False) -> Iterator[Watch]:
    """Probe health and ModelInfer (and with `rest`, REST's ready and infer) while the block
    runs, then require they never suffered."""
    with served.target.channel() as ch:
        checks = attacks.inference_checks(served.target, ch)
        if rest:
            checks.update(attacks.rest_checks(served.target))
        watch = Watch(Probe(checks, rss_of=served.served.pid, timeout=PROBE_DEADLINE_S), served.rss)
        with watch.probe as probe:
            yield watch
    # The figures, for `pytest -s` (docs/serving.md quotes them).
    print(
        f"\nprobe: {probe.calls} calls, slowest {probe.worst:.3f} s; RSS {watch.rss_before:.0f} "
        f"MiB before, peak {probe.peak_rss:.0f} MiB, after {served.rss:.0f} MiB"
    )
    assert not probe.failures, f"the probe failed during the attack: {probe.failures[:5]}"
    assert probe.calls >= 2
    served.served.check_memory()  # alive, never OOM-killed under the pod's limit


def test_repeated_outputs_are_refused_before_any_work(served: Pod) -> None:
    """Item 1: 20,000 repeats of an output of batch 64; 5,000 and 1,000 with classification
    k=10 (the last is small enough to be parsed: the duplicate is what refuses it)."""
    requests = [
        attacks.repeated_outputs_request("digits", 20_000),
        attacks.repeated_outputs_request("digits", 5_000, k=10),
        attacks.repeated_outputs_request("digits", 1_000, k=10),
    ]
    with probed(served) as watch:
        outcomes = [attacks.repeated_outputs(served.target, r) for r in requests]
    for outcome in outcomes:
        assert outcome.codes == Counter(INVALID_ARGUMENT=1), outcome
    assert watch.growth < 30, watch


def test_made_up_method_names_cost_no_memory(served: Pod) -> None:
    """Item 2: 3,000 calls to different 4 kB method names under the health service."""
    attacks.made_up_methods(served.target, calls=300)  # whatever gRPC sets up once
    with probed(served) as watch:
        outcome = attacks.made_up_methods(served.target, calls=3000)
    assert outcome.codes == Counter(UNIMPLEMENTED=3000), outcome
    kept = served.rss - watch.rss_before
    print(f"kept {kept:.1f} MiB after {outcome.seconds:.1f} s")
    assert kept < 5, watch  # each name was kept: +10 MB for these 3,000


def test_idle_streams_cannot_freeze_the_server(served: Pod) -> None:
    """Item 3: more idle ModelStreamInfer streams than handler threads."""
    with probed(served):
        outcome = attacks.idle_stream_infer(
            served.target, count=HANDLER_THREADS + 4, hold=IDLE_TIMEOUT_S + 3
        )
    # 4 streams allowed (STRIDE_MAX_STREAMS); of those, 2 fit the memory budget (each holds
    # a 64 MB message's worth of the 256 MB budget, streams at most half), ended once idle;
    # the other 10 refused at once.
    assert outcome.codes == Counter(RESOURCE_EXHAUSTED=10, DEADLINE_EXCEEDED=2), outcome


def test_large_images_are_refused_from_their_header(served: Pod) -> None:
    """Item 4: four 4000x4000 PNGs at once for a model whose input is 8x8."""
    attacks.large_png(4000)  # built before the clock runs
    with probed(served) as watch:
        outcome = attacks.large_images(served.target, side=4000, parallel=4)
    assert outcome.codes == Counter(INVALID_ARGUMENT=4), outcome
    assert watch.growth < 30, watch


def test_millions_of_empty_bytes_elements_are_refused_by_count(served: Pod) -> None:
    """Item 5: 2 million empty BYTES elements, raw (shape [N] and [1]) and typed."""
    requests = attacks.empty_bytes_requests("digits", 2_000_000)
    with probed(served) as watch:
        outcome = attacks.empty_bytes(served.target, requests)
    assert outcome.codes == Counter(INVALID_ARGUMENT=3), outcome
    # The elements are counted on the wire: what remains is gRPC holding each message (8 MB)
    # while it is read, not protobuf's or Python's objects for each element (the old cost).
    assert watch.growth < 60, watch


def test_half_open_metrics_connections_are_bounded_and_timed_out(served: Pod) -> None:
    """Item 6: 40 connections that send half a request line and wait."""
    threads_before = served.threads
    seen: dict[str, int] = {}

    def during() -> None:
        time.sleep(0.3)
        seen["threads"] = served.threads

    with probed(served):
        outcome = attacks.half_open_metrics(served.target, count=40, hold=3.0, during=during)
    assert outcome.codes == Counter(closed=40), outcome  # refused at once, or timed out
    assert seen["threads"] - threads_before <= METRICS_CONNECTIONS + 1, (threads_before, seen)
    time.sleep(0.3)  # the handler threads notice their closed sockets
    assert "nv_inference_request_success" in attacks.scrape(served.target)
    assert b"Traceback" not in served.log()


def test_rest_repeated_outputs_are_refused_before_any_work(served: Pod) -> None:
    """Item 7 (item 1 over REST): 20,000 repeats of an output of batch 64."""
    body = attacks.rest_repeated_outputs_body(20_000)
    with probed(served, rest=True) as watch:
        outcome = attacks.rest_attack(served.target, "repeated outputs", [body])
    assert outcome.codes == Counter({"400": 1}), outcome
    assert watch.growth < 30, watch


def test_rest_large_images_are_refused_from_their_header(served: Pod) -> None:
    """Item 7 (item 4 over REST): four 4000x4000 PNGs at once."""
    body = attacks.rest_image_body(4000)
    with probed(served, rest=True) as watch:
        outcome = attacks.rest_attack(served.target, "large images", [body], parallel=4)
    assert outcome.codes == Counter({"400": 4}), outcome
    assert watch.growth < 30, watch


def test_rest_empty_bytes_elements_are_refused_by_count(served: Pod) -> None:
    """Item 7 (item 5 over REST): 2 million empty BYTES elements as binary data."""
    body = attacks.rest_empty_bytes_body(2_000_000)
    with probed(served, rest=True) as watch:
        outcome = attacks.rest_attack(served.target, "empty BYTES elements", [body])
    assert outcome.codes == Counter({"400": 1}), outcome
    assert watch.growth < 60, watch


def test_rest_bodies_that_never_arrive_hold_nothing_and_time_out(served: Pod) -> None:
    """Item 7: 40 REST requests that announce 64 MB (the message limit) and send 9 bytes,
    held for 3 s, while gRPC and REST probes call every 100 ms. Bodies used to hold the
    bytes they declared: four took the whole 256 MB budget and every other REST request
    was answered 429 until they left. Now a body holds what has arrived, and the body
    timeout (2 s here) answers 408."""
    with probed(served, rest=True):
        outcome = attacks.slow_bodies(served.target, count=40, hold=3.0, size=64 << 20)
    assert outcome.codes == Counter({"answered 408": 40}), outcome


def test_rest_connections_that_never_finish_their_headers_are_closed(served: Pod) -> None:
    """Item 7: 40 REST connections, half with part of a request line and headers, half
    silent, held for 3 s. uvicorn alone kept them all open for as long as the client
    did (each a file descriptor, shared with the gRPC port); the header timeout (2 s
    here) answers 408 and closes them."""
    with probed(served, rest=True):
        outcome = attacks.slow_headers(served.target, count=40, hold=3.0)
    assert outcome.codes == Counter({"answered 408": 40}), outcome
