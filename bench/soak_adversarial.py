"""The soak's adversarial phase: `stride serve` started as deploy/ starts it, under the
pod's memory limit, with a well-behaved load and a hostile client cycling through the
attacks of the resilience suite.

    python bench/soak.py --phase adversarial --minutes 1 --window 15

The server is Deployment stride-inference's command line (bench/deployed.py: TLS, a
token, the health port, the grace period, polling; every limit at the value the
manifest gives it or its default) in a cgroup with the pod's memory limit where the
machine allows, else its resident memory is measured against that limit. Its
repository holds `digits`, the load's model, and `target`, a copy the attacks call (so
that their refusals do not count as failures of the load's model).

The well-behaved client, from 127.0.0.1:
- perf_analyzer at concurrency 64 on `digits` over HTTPS REST with the token (it sends
  no token over gRPC), for the whole phase, reporting a window at a time;
- the kubelet's readiness probe: grpc.health.v1 Check of the inference service on the
  plaintext health port, every 100 ms, with the probe's deadline (the manifest's
  timeoutSeconds: 1 s), from a process of its own as the kubelet's (bench/readiness.py);
  the same probe calls a control, an idle server started the same way at the same time,
  so that a probe missed because the machine is loaded shows as such;
- a ModelInfer over gRPC (TLS, the token) and a JSON infer over REST every 100 ms, each
  with a 5 s deadline.

The hostile client, from 127.0.0.2 (its gRPC calls through bench/relay.py, so that the
server sees another peer), in a loop: the request-cost attacks (bench/attacks.py: repeated
outputs, made-up methods, idle streams past --max-streams, large images, millions of
empty BYTES elements, half-open metrics connections); the gRPC admission attacks
(bench/grpc_attacks.py: 40 withheld 60 MB messages without the token, 12 with it,
silent connections past the handshake timeout, health Watch streams without the token
past their slots, health Check of a made-up model without the token, unload without
and with the token); the REST attacks (bench/rest_attacks.py: header lines that
never end, pipelined requests never read, bodies of `{}` that cost too much parsed,
withheld bodies, silent connections past the per-address limit, held metrics
connections while a scrape from 127.0.0.1 must be answered).

Pass, printed and checked (the exit status is 1 otherwise):
- zero failed normal requests: perf_analyzer reports no error and the server counts no
  failure for `digits`; perf_analyzer ran every window;
- no call of the well-behaved client failed or missed its deadline;
- resident memory stayed under 75% of the pod's limit, and (with the cgroup) the kernel
  never OOM-killed the server; growth under 10% between the first and the last window;
- every attack got a clear answer (CLEAR: a refusal that names the limit, never an
  answer); the server exits 0 within the pod's grace period after SIGTERM.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench import attacks, grpc_attacks, rest_attacks
from bench.attacks import Outcome, Probe, Target, _timed
from bench.deployed import Served, flag, serve_inference
from bench.readiness import Readiness
from bench.relay import Relay
from bench.repo import linear_model
from bench.rest_attacks import RestTarget
from bench.servers import PERF_ANALYZER

MAX_MEMORY_GROWTH = 0.10
MAX_RSS_SHARE = 0.75  # of the pod's memory limit
INFER_DEADLINE_S = 5.0
ATTACKER = "127.0.0.2"
INFER = "/inference.GRPCInferenceService/ModelInfer"
MESSAGE = 60 << 20  # under the deployment's 64 MB message limit
STREAM_HOLD_S = 5.0  # each cycle holds its idle streams this long, then leaves
METRICS_HOLD_S = 7.0  # half-open metrics connections: stride serve's --metrics-timeout + 2
# What each attack may get back: a refusal that names the limit, never an answer.
CLEAR = {
    "repeated outputs": {"INVALID_ARGUMENT"},
    "made-up methods": {"UNIMPLEMENTED"},
    "idle ModelStreamInfer": {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "open"},
    "large images": {"INVALID_ARGUMENT"},
    "empty BYTES elements": {"INVALID_ARGUMENT"},
    "half-open metrics connections": {"closed"},
    "withheld gRPC messages without the token": {"UNAUTHENTICATED"},
    "withheld gRPC messages with the token": {"open", "taken in within the share"},
    "silent gRPC connections": {"closed", "refused"},
    "health Watch streams without the token": {"open", "RESOURCE_EXHAUSTED"},
    "a stream with the token beside them": {"OK"},
    "health Check of a made-up model without the token": {"SERVING (the server's)"},
    "unload without the token": {"UNAUTHENTICATED"},
    "unload with the token": {"UNAVAILABLE"},
    "REST header flood": {"answered 431"},
    "REST pipelined requests never read": {"closed"},
    "costly JSON": {"413", "429"},
    "withheld REST bodies": {"open", "answered 429"},
    "silent REST connections": {"answered 408", "answered 503", "closed"},
    "scrapes beside held metrics connections": {"200"},
}


class Hostile:
    """Cycles through the attacks until stopped; `outcomes` adds up what each one got."""

    def __init__(self, served: Served, relay: Relay, max_streams: int) -> None:
        self.served = served
        # gRPC attacks through the relay (another peer), REST ones from ATTACKER.
        self.target = Target(
            relay.port, "target", served.token, served.port("metrics"),
            http_port=served.port("http"), ca=str(served.ca),
        )  # fmt: skip
        self.rest = RestTarget(
            served.port("http"), "target", served.token, ca=str(served.ca), host="localhost",
            metrics_port=served.port("metrics"),
        )  # fmt: skip
        self.tls = ssl.create_default_context(cafile=str(served.ca))
        self.max_streams = max_streams
        self.outcomes: dict[str, Outcome] = {}
        self.cycles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)
        # Built once, outside the clock: the client's own work is not the server's.
        self._plain = attacks.repeated_outputs_request("target", 20_000)
        self._ranked = attacks.repeated_outputs_request("target", 1_000, k=10)
        self._empty = attacks.empty_bytes_requests("target", 2_000_000)
        self._costly = rest_attacks.empty_objects_body(4 << 20)
        attacks.large_png(4000)

    def _attacks(self) -> list[Any]:
        t = self.target
        return [
            lambda: attacks.repeated_outputs(t, self._plain),
            lambda: attacks.repeated_outputs(t, self._ranked),
            lambda: attacks.made_up_methods(t, calls=500),
            lambda: attacks.idle_stream_infer(t, self.max_streams + 8, STREAM_HOLD_S),
            lambda: attacks.large_images(t, side=4000, parallel=4),
            lambda: attacks.empty_bytes(t, self._empty),
            lambda: attacks.half_open_metrics(t, count=40, hold=METRICS_HOLD_S),
            *self._grpc_attacks(),
            *self._rest_attacks(),
        ]

    def _grpc_attacks(self) -> list[Any]:
        port = self.served.port("grpc")
        token = self.served.metadata
        return [
            lambda: grpc_attacks.withheld(
                "withheld gRPC messages without the token", "127.0.0.1", port, INFER,
                streams=40, size=MESSAGE, seconds=3, tls=self.tls, source=ATTACKER,
            ),
            lambda: grpc_attacks.withheld(
                "withheld gRPC messages with the token", "127.0.0.1", port, INFER,
                streams=12, size=MESSAGE, seconds=5, share=self._share(), metadata=token,
                tls=self.tls, source=ATTACKER,
            ),
            lambda: grpc_attacks.silent("silent gRPC connections", "127.0.0.1", port, 100, 15),
            self._watches,
            self._oracle,
            self._unloads,
        ]  # fmt: skip

    def _share(self) -> int:
        """The gRPC memory budget's share of one address, as the server computes it from
        the manifest's flags."""
        from services.common.options import ServerOptions

        argv = self.served.server.argv

        def mb(name: str) -> float | None:
            value = flag(argv, name)
            return float(value) if value is not None else None

        options = ServerOptions(
            max_message_mb=mb("--max-message-mb") or 64,
            memory_budget_mb=mb("--grpc-memory-budget-mb"),
            memory_budget_mb_per_peer=mb("--grpc-memory-budget-mb-per-peer"),
        )
        return options.budget_per_peer_bytes

    def _watches(self) -> Outcome:
        """Item 7: 32 health Watch streams without the token; meanwhile a ModelStreamInfer
        with the token must open and answer."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        def watch(ch: grpc.Channel, _: Any) -> Any:
            return health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())

        beside = Outcome("a stream with the token beside them")

        def during() -> None:
            with self.target.channel() as ch:
                stub = attacks.pb_grpc.GRPCInferenceServiceStub(ch)
                request = attacks.normal_request("target")
                try:
                    for reply in stub.ModelStreamInfer(
                        iter([request]), metadata=self.served.metadata, timeout=30
                    ):
                        beside.add("OK" if not reply.error_message else "error message")
                except grpc.RpcError as exc:
                    beside.add(exc.code())

        helper = threading.Timer(1.0, during)
        helper.start()
        outcome = attacks.idle_streams(
            watch, self.target.channel, 32, 3.0, "health Watch streams without the token"
        )
        helper.join(60)
        self._record(beside)
        return outcome

    def _oracle(self) -> Outcome:
        """Item 14: health Check of a model that does not exist, without the token."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        def attack(out: Outcome) -> None:
            with self.target.channel() as ch:
                health = health_pb2_grpc.HealthStub(ch)
                request = health_pb2.HealthCheckRequest(service="no-such-model")
                try:
                    status = health.Check(request, timeout=30).status
                    out.add("SERVING (the server's)" if status == 1 else f"status {status}")
                except grpc.RpcError as exc:
                    out.add(exc.code())

        return _timed("health Check of a made-up model without the token", attack)

    def _unloads(self) -> Outcome:
        """Item 12: unload `target` without the token, then with it (model control off)."""
        from services.generated.inference import grpc_service_pb2 as pb

        request = pb.RepositoryModelUnloadRequest(model_name="target")
        without: tuple[tuple[str, str], ...] = ()
        for name, metadata in (
            ("unload without the token", without),
            ("unload with the token", self.served.metadata),
        ):
            out = Outcome(name)
            with self.target.channel() as ch:
                stub = attacks.pb_grpc.GRPCInferenceServiceStub(ch)
                try:
                    stub.RepositoryModelUnload(request, metadata=metadata, timeout=30)
                    out.add("OK")
                except grpc.RpcError as exc:
                    out.add(exc.code())
            self._record(out)
        return Outcome("unload with the token")  # recorded above

    def _rest_attacks(self) -> list[Any]:
        r = self.rest
        header_timeout = 10.0  # stride serve's default --http-header-timeout
        return [
            lambda: rest_attacks.header_flood(r, 5),
            lambda: rest_attacks.header_flood(r, 5, one_value=True),
            lambda: rest_attacks.pipeline_flood(r, 5),
            lambda: rest_attacks.parallel_posts(r, "costly JSON", self._costly, 4, source=ATTACKER),
            self._withheld_rest,
            lambda: rest_attacks.silent_connections(
                r, 140, hold=header_timeout + 5, source=ATTACKER
            ),
            self._scrapes,
        ]

    def _withheld_rest(self) -> Outcome:
        with rest_attacks.withheld_bodies(self.rest, 4, 48 << 20, ATTACKER) as outcome:
            time.sleep(2)
        return outcome

    def _scrapes(self) -> Outcome:
        def attack(out: Outcome) -> None:
            with rest_attacks.held_metrics_connections(self.rest, 8, ATTACKER):
                for _ in range(3):
                    try:
                        out.add(str(rest_attacks.scrape(self.rest)))
                    except OSError as exc:
                        out.add(type(exc).__name__)

        return _timed("scrapes beside held metrics connections", attack)

    def _record(self, outcome: Outcome) -> None:
        total = self.outcomes.setdefault(outcome.name, Outcome(outcome.name))
        total.codes.update(outcome.codes)
        total.seconds += outcome.seconds

    def _run(self) -> None:
        while not self._stop.is_set():
            for attack in self._attacks():
                if self._stop.is_set():
                    return
                outcome = attack()
                if outcome.codes:
                    self._record(outcome)
            self.cycles += 1

    def start(self) -> Hostile:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


def perf_analyzer_rest(
    served: Served, model: str, concurrency: int, window_ms: int, passes: int
) -> list[str]:
    """perf_analyzer over HTTPS REST with the token (its gRPC client sends no headers)."""
    if not PERF_ANALYZER.exists():
        raise FileNotFoundError(f"{PERF_ANALYZER} missing: run `make triton-client`")
    return [
        str(PERF_ANALYZER), "-m", model, "-u", f"https://localhost:{served.port('http')}",
        "-i", "http", "-b", "1", "--concurrency-range", str(concurrency),
        "-p", str(window_ms), "-r", str(passes), "-s", "0", "--percentile", "99", "-v",
        "--input-data", "random", "--ssl-https-ca-certificates-file", str(served.ca),
        "-H", f"Authorization:Bearer {served.token}",
    ]  # fmt: skip


def _well_behaved(served: Served) -> dict[str, Any]:
    """The well-behaved client's inference calls over gRPC and REST."""
    target = Target(
        served.port("grpc"), "digits", served.token, http_port=served.port("http"),
        ca=str(served.ca),
    )  # fmt: skip
    channel = target.channel()
    checks = attacks.inference_checks(target, channel)
    rest = rest_attacks.checks(
        RestTarget(served.port("http"), "digits", served.token, ca=str(served.ca), host="localhost")
    )
    infer = {"gRPC ModelInfer": checks["infer"], "REST infer": rest["rest_infer"]}
    for check in infer.values():
        check(60.0)  # connected and warm before the clock runs
    return infer


class Probes:
    """The kubelet's readiness probe (bench/readiness.py, a process of its own) on the
    attacked server and on the control: an idle server started the same way, on the
    same machine at the same time. When both miss their deadline, the load is why."""

    def __init__(self, served: Served, control: Served, service: str) -> None:
        deadline = served.server.pod.probe_timeouts.get("readiness", 1.0)
        self.attacked = Readiness(served.port("health"), service, deadline)
        self.control = Readiness(control.port("health"), service, deadline)

    def stop(self) -> dict[str, Any]:
        return {"attacked": self.attacked.stop(), "control": self.control.stop()}


def readiness_failures(probes: dict[str, Any]) -> list[str]:
    """The readiness criterion: no probe of the attacked server failed; the control's
    figures say whether the machine's load alone made probes miss."""
    attacked, control = probes["attacked"], probes["control"]
    if not attacked["failed"]:
        return []
    why = (
        f"; at the same time the idle control server's probe failed {control['failed']} and "
        f"took the deadline or longer {control['late']} times of {control['calls']} (slowest "
        f"{control['worst_s']:.2f} s), the attacked server's {attacked['late']} times"
    )
    return [
        f"readiness probe failed {attacked['failed']} of {attacked['calls']} (deadline "
        f"{attacked['deadline_s']:g} s, slowest {attacked['worst_s']:.2f} s){why}: "
        f"{attacked['failures'][:2]}"
    ]


def readiness_report(probes: dict[str, Any]) -> list[str]:
    lines = []
    for who, label in (("attacked", "readiness probe"), ("control", "  the idle control's")):
        p = probes[who]
        lines.append(
            f"  {label}: {p['calls']} calls, slowest {p['worst_s']:.3f} s, p99 "
            f"{p['p99_s']:.3f} s (deadline {p['deadline_s']:g} s), {p['failed']} failed, "
            f"{p['late']} took the deadline or longer"
        )
    return lines


def adversarial(minutes: float, window_s: float = 60, concurrency: int = 64) -> dict[str, Any]:
    """Run the adversarial phase and return its figures (see `check` for the verdict)."""
    from bench.soak import Sampler, _load, _window_mean

    passes = max(2, round(minutes * 60 / window_s))
    max_streams = 32  # stride serve's default --max-streams (the manifest sets none)
    load: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stride-soak-adv-") as tmp:
        repo = Path(tmp) / "repository"
        linear_model(repo, "digits", max_batch=64)
        linear_model(repo, "target", max_batch=64)
        served = serve_inference(Path(tmp) / "pod", repo)
        control = serve_inference(Path(tmp) / "control", repo)
        exit_code: int | None = None
        exit_s = 0.0
        try:
            command = perf_analyzer_rest(
                served, "digits", concurrency, int(window_s * 1000), passes
            )
            infer_checks = _well_behaved(served)
            start = time.perf_counter()
            sampler = Sampler(
                served.pid, served.port("grpc"), "digits", channel=served.channel,
                metadata=served.metadata,
            )  # fmt: skip
            watcher = threading.Thread(target=sampler.run, args=(start,), daemon=True)
            watcher.start()
            probes = Probes(served, control, "inference.GRPCInferenceService")
            with (
                Relay(served.port("grpc"), source=ATTACKER) as relay,
                Probe({}, rss_of=served.pid) as health,  # resident memory every 100 ms
                Probe(infer_checks, timeout=INFER_DEADLINE_S) as infer,
            ):
                hostile = Hostile(served, relay, max_streams).start()
                loads = _LoadAverage().start()
                windows, output, code = _load(
                    command, passes, start, lambda: None, timeout=passes * window_s * 2 + 300
                )
                hostile.stop()
                load = loads.stop()
                readiness = probes.stop()
            elapsed = time.perf_counter() - start
            time.sleep(1.5)  # one more statistics sample after the last request
            sampler.stop()
            watcher.join(timeout=10)
            alive = served.server.alive()
        finally:
            exit_code, exit_s = served.stop()
            control.stop()
        memory = served.server.memory_figures()
    errors = [line.strip() for line in output.splitlines() if "error" in line.lower()]
    rss_peak = max(max((v for _, v in sampler.rss), default=0.0), health.peak_rss)
    memory["rss_peak_mb"] = rss_peak  # sampled here, not by the launcher
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    first_rss = _window_mean(sampler.rss, first.get("end_s", 0) - window_s, first.get("end_s", 0))
    last_rss = _window_mean(sampler.rss, last.get("end_s", 0) - window_s, last.get("end_s", 0))
    return {
        "minutes": passes * window_s / 60,
        "window_s": window_s,
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "server": served.server.argv[3:],
        "windows": windows,
        "passes_expected": passes,
        "perf_analyzer_errors": errors[:10],
        "perf_analyzer_exit": code,
        "requests_in_windows": round(sum(w["throughput"] for w in windows) * window_s),
        "server_failures": sum(sampler.failures.values()),
        "server_successes": sum(sampler.successes.values()),
        "rss_first_window_mb": first_rss,
        "rss_last_window_mb": last_rss,
        "rss_peak_mb": rss_peak,
        "memory_growth": last_rss / first_rss - 1 if first_rss else None,
        "memory": memory,
        "alive": alive,
        "readiness": readiness,
        "infer_calls": infer.calls,
        "infer_failures": infer.failures[:10],
        "infer_worst_s": infer.worst,
        "load_average": {"min": min(load, default=0), "max": max(load, default=0),
                         "mean": sum(load) / len(load) if load else 0, "cores": os.cpu_count()},
        "attack_cycles": hostile.cycles,
        "attacks": {
            name: {"codes": dict(o.codes), "seconds": round(o.seconds, 2)}
            for name, o in hostile.outcomes.items()
        },
        "server_exit": exit_code,
        "server_exit_s": exit_s,
    }  # fmt: skip


class _LoadAverage:
    """The machine's 1-minute load average, sampled every 10 s in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(10):
                return

    def start(self) -> _LoadAverage:
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def memory_failures(result: dict[str, Any]) -> list[str]:
    """The pod-limit criteria that failed: RSS under 75% of the limit, no OOM kill."""
    failed = []
    memory = result["memory"]
    limit = memory["limit_mb"]
    if result["rss_peak_mb"] >= MAX_RSS_SHARE * limit:
        failed.append(
            f"peak RSS {result['rss_peak_mb']:.0f} MiB, over {MAX_RSS_SHARE:.0%} of the pod's "
            f"{limit:.0f} MiB"
        )
    if memory.get("oom_kills"):
        failed.append(f"the kernel OOM-killed the server {memory['oom_kills']} times")
    if not result["alive"]:
        failed.append("the server died during the soak")
    return failed


def check(result: dict[str, Any]) -> list[str]:
    """The pass criteria that failed (empty: the phase passed)."""
    failed = []
    if result["perf_analyzer_errors"] or result["server_failures"]:
        failed.append(
            f"failed normal requests: server counted {result['server_failures']}, "
            f"perf_analyzer said {result['perf_analyzer_errors'][:2]}"
        )
    if len(result["windows"]) != result["passes_expected"]:
        failed.append(
            f"perf_analyzer ran {len(result['windows'])} of {result['passes_expected']} windows"
        )
    growth = result["memory_growth"]
    if growth is None or growth >= MAX_MEMORY_GROWTH:
        failed.append(f"resident memory grew {growth} (limit {MAX_MEMORY_GROWTH:.0%})")
    failed += memory_failures(result)
    failed += readiness_failures(result["readiness"])
    if result["infer_failures"]:
        failed.append(f"infer calls failed: {result['infer_failures'][:3]}")
    if not result["attack_cycles"] and not result["attacks"]:
        failed.append("the hostile client made no attack")
    for name, seen in result["attacks"].items():
        unclear = {c: n for c, n in seen["codes"].items() if c not in CLEAR.get(name, ())}
        if unclear:
            failed.append(f"{name}: answers other than a clear refusal: {dict(unclear)}")
    if result["server_exit"] != 0:
        failed.append(f"server exit {result['server_exit']} after SIGTERM")
    return failed


def report(result: dict[str, Any]) -> str:
    """The phase's figures as text."""
    memory, load = result["memory"], result["load_average"]
    lines = [
        f"adversarial (stride serve as deploy/ runs it): {result['minutes']:.1f} min, "
        f"perf_analyzer at concurrency {result['concurrency']} over HTTPS REST, "
        f"{result['window_s']:.0f} s windows, {result['attack_cycles']} attack cycles; "
        f"{result['server_successes']:,} normal requests served",
        f"  machine: {load['cores']} cores, load average {load['min']:.1f} to "
        f"{load['max']:.1f} (mean {load['mean']:.1f})",
        f"  {'window':>6} {'ends at s':>9} {'infer/s':>9} {'p99 ms':>8}",
    ]
    for w in result["windows"]:
        p99_ms = w["p99_us"] / 1000
        lines.append(f"  {w['pass']:>6} {w['end_s']:>9.0f} {w['throughput']:>9.1f} {p99_ms:>8.1f}")
    for name, seen in result["attacks"].items():
        codes = ", ".join(f"{code} {n}" for code, n in sorted(seen["codes"].items()))
        lines.append(f"  attack {name}: {codes} ({seen['seconds']:.1f} s in all)")
    growth = result["memory_growth"]
    limit = f"the pod's {memory['limit_mb']:.0f} MiB"
    if memory["mode"] == "cgroup":
        limit += (
            f" as a cgroup: peak charge {memory['cgroup_peak_mb']:.0f} MiB, "
            f"{memory['failcnt']} charges at the limit, {memory['oom_kills']} OOM kills"
        )
    else:
        limit += " (no cgroup here: RSS measured against it)"
    lines += [
        f"  failed normal requests: {result['server_failures']} (server), "
        f"{len(result['perf_analyzer_errors'])} error lines (perf_analyzer)",
        *readiness_report(result["readiness"]),
        f"  gRPC and REST infer of the well-behaved client: {result['infer_calls']} calls, "
        f"slowest {result['infer_worst_s']:.3f} s (deadline {INFER_DEADLINE_S:g} s), "
        f"{len(result['infer_failures'])} failed",
        f"  RSS: first window {result['rss_first_window_mb']:.1f} MiB, last "
        f"{result['rss_last_window_mb']:.1f} MiB, peak {result['rss_peak_mb']:.1f} MiB "
        f"against {limit}: "
        + (f"growth {growth:+.1%} (limit +10%)" if growth is not None else "no samples"),
        f"  server exit status after SIGTERM: {result['server_exit']} "
        f"({result['server_exit_s']:.1f} s)",
    ]
    return "\n".join(lines)
