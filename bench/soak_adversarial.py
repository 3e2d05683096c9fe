"""The soak's adversarial phase: the load of `make soak` while one hostile client attacks.

    python bench/soak.py --phase adversarial --minutes 1 --window 15

perf_analyzer keeps concurrency 64 on model `digits` for the whole phase, as in the
swap phase. Meanwhile one hostile client cycles through the attacks of issue 15
(bench/attacks.py) against model `target` (a copy, so that its refusals do not count
as failures of the load's model): repeated outputs, made-up method names, idle
streams past --max-streams, oversized images, millions of empty BYTES elements,
half-open metrics connections. A probe calls health every 100 ms with a 1 s deadline.

The server also serves REST (`--http-port`, a 2 s header timeout and a 32 MB REST memory
budget, so that the REST attacks reach its limits): the same client cycles through
issue 25's REST attacks (bench/rest_attacks.py) from another address (127.0.0.2):
header lines that never end, pipelined requests never read, bodies of `{}` that cost
too much parsed, withheld bodies, silent connections past the per-address limit, held
metrics connections while a scrape from 127.0.0.1 must be answered.

Pass, printed and checked (the exit status is 1 otherwise):
- zero failed normal requests: perf_analyzer reports no error and the server counts
  no failure for `digits`;
- resident memory growth under 10% between the first and the last window;
- health always answering: no probe call failed or took 1 s;
- every attack answered with a clear error (no OK, no INTERNAL, no stream left open).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import attacks, rest_attacks
from bench.attacks import Outcome, Probe, Target, _timed
from bench.repo import linear_model
from bench.rest_attacks import RestTarget
from bench.servers import (
    free_port,
    perf_analyzer_command,
    start_stride_serve,
    stop,
    wait_ready,
)

MAX_MEMORY_GROWTH = 0.10
PROBE_LIMIT_S = 1.0
# What each attack may get back: a refusal that names the limit, never an answer.
CLEAR = {
    "repeated outputs": {"INVALID_ARGUMENT"},
    "made-up methods": {"UNIMPLEMENTED"},
    "idle ModelStreamInfer": {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "open"},
    "large images": {"INVALID_ARGUMENT"},
    "empty BYTES elements": {"INVALID_ARGUMENT"},
    "half-open metrics connections": {"closed"},
    "REST header flood": {"answered 431"},
    "REST pipelined requests never read": {"closed"},
    "costly JSON": {"413", "429"},
    "withheld REST bodies": {"open", "answered 429"},
    "silent REST connections": {"answered 408", "answered 503", "closed"},
    "scrapes beside held metrics connections": {"200"},
}
HEADER_TIMEOUT_S = 2  # the server's --http-header-timeout here
REST_BUDGET_MB = 32  # and --http-memory-budget-mb: 16 MB for one address
ATTACKER = "127.0.0.2"
STREAM_HOLD_S = 5.0  # each cycle holds its idle streams this long, then leaves
METRICS_HOLD_S = 7.0  # half-open metrics connections: stride serve's --metrics-timeout + 2


class Hostile:
    """Cycles through the attacks until stopped; `outcomes` adds up what each one got."""

    def __init__(self, target: Target, max_streams: int, rest: RestTarget) -> None:
        self.target = target
        self.rest = rest
        self.max_streams = max_streams
        self.outcomes: dict[str, Outcome] = {}
        self.cycles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)
        # Built once, outside the clock: the client's own work is not the server's.
        self._plain = attacks.repeated_outputs_request(target.model, 20_000)
        self._ranked = attacks.repeated_outputs_request(target.model, 1_000, k=10)
        self._empty = attacks.empty_bytes_requests(target.model, 2_000_000)
        self._costly = rest_attacks.empty_objects_body(2 << 20)
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
            *self._rest_attacks(),
        ]

    def _rest_attacks(self) -> list[Any]:
        r = self.rest
        return [
            lambda: rest_attacks.header_flood(r, 5),
            lambda: rest_attacks.header_flood(r, 5, one_value=True),
            lambda: rest_attacks.pipeline_flood(r, 5),
            lambda: rest_attacks.parallel_posts(r, "costly JSON", self._costly, 4, source=ATTACKER),
            self._withheld,
            lambda: rest_attacks.silent_connections(
                r, 140, hold=HEADER_TIMEOUT_S + 2, source=ATTACKER
            ),
            self._scrapes,
        ]

    def _withheld(self) -> Outcome:
        with rest_attacks.withheld_bodies(self.rest, 4, 8 << 20, ATTACKER) as outcome:
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

    def _run(self) -> None:
        while not self._stop.is_set():
            for attack in self._attacks():
                if self._stop.is_set():
                    return
                outcome = attack()
                total = self.outcomes.setdefault(outcome.name, Outcome(outcome.name))
                total.codes.update(outcome.codes)
                total.seconds += outcome.seconds
            self.cycles += 1

    def start(self) -> Hostile:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def adversarial(minutes: float, window_s: float = 60, concurrency: int = 64) -> dict[str, Any]:
    """Run the adversarial phase and return its figures (see `check` for the verdict)."""
    from bench.soak import Sampler, _load, _window_mean

    passes = max(2, round(minutes * 60 / window_s))
    max_streams = 32  # stride serve's default --max-streams
    with tempfile.TemporaryDirectory(prefix="stride-soak-adv-") as tmp:
        repo = Path(tmp)
        linear_model(repo, "digits", max_batch=64)
        linear_model(repo, "target", max_batch=64)
        port, metrics_port, http_port = free_port(), free_port(), free_port()
        extra = ("--http-header-timeout", str(HEADER_TIMEOUT_S),
                 "--http-memory-budget-mb", str(REST_BUDGET_MB))  # fmt: skip
        server = start_stride_serve(
            repo, port, metrics_port=metrics_port, http_port=http_port, extra=extra
        )
        try:
            ready_s = wait_ready(port, server)
            target = Target(port, "target", metrics_port=metrics_port)
            rest = RestTarget(http_port, "target", metrics_port=metrics_port)
            command = perf_analyzer_command(
                "digits", port, concurrency, int(window_s * 1000), passes, stability=0
            )
            hostile = Hostile(target, max_streams, rest)
            start = time.perf_counter()
            sampler = Sampler(server.pid, port, "digits")
            watcher = threading.Thread(target=sampler.run, args=(start,), daemon=True)
            watcher.start()
            with target.channel() as ch:
                health = {"health": attacks.inference_checks(target, ch)["health"]}
                with Probe(health, timeout=PROBE_LIMIT_S) as probe:
                    hostile.start()
                    windows, output, code = _load(
                        command, passes, start, lambda: None, timeout=passes * window_s * 2 + 300
                    )
                    hostile.stop()
            elapsed = time.perf_counter() - start
            time.sleep(1.5)  # one more statistics sample after the last request
            sampler.stop()
            watcher.join(timeout=10)
        finally:
            exit_code = stop(server)
    errors = [line.strip() for line in output.splitlines() if "error" in line.lower()]
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    first_rss = _window_mean(sampler.rss, first.get("end_s", 0) - window_s, first.get("end_s", 0))
    last_rss = _window_mean(sampler.rss, last.get("end_s", 0) - window_s, last.get("end_s", 0))
    return {
        "minutes": passes * window_s / 60,
        "window_s": window_s,
        "concurrency": concurrency,
        "server_ready_s": ready_s,
        "elapsed_s": elapsed,
        "windows": windows,
        "passes_expected": passes,
        "perf_analyzer_errors": errors[:10],
        "perf_analyzer_exit": code,
        "server_failures": sum(sampler.failures.values()),
        "server_successes": sum(sampler.successes.values()),
        "rss_first_window_mb": first_rss,
        "rss_last_window_mb": last_rss,
        "rss_peak_mb": max((v for _, v in sampler.rss), default=0.0),
        "memory_growth": last_rss / first_rss - 1 if first_rss else None,
        "health_calls": probe.calls,
        "health_failures": probe.failures[:10],
        "health_worst_s": probe.worst,
        "attack_cycles": hostile.cycles,
        "attacks": {
            name: {"codes": dict(o.codes), "seconds": round(o.seconds, 2)}
            for name, o in hostile.outcomes.items()
        },
        "server_exit": exit_code,
    }


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
    if result["health_failures"] or result["health_worst_s"] >= PROBE_LIMIT_S:
        failed.append(
            f"health did not always answer: slowest {result['health_worst_s']:.2f} s, "
            f"failures {result['health_failures'][:2]}"
        )
    if not result["attack_cycles"] and not result["attacks"]:
        failed.append("the hostile client made no attack")
    for name, seen in result["attacks"].items():
        unclear = {c: n for c, n in seen["codes"].items() if c not in CLEAR.get(name, ())}
        if unclear:
            failed.append(f"{name}: answers other than a clear refusal: {dict(unclear)}")
    return failed


def report(result: dict[str, Any]) -> str:
    """The phase's figures as text."""
    lines = [
        f"adversarial: {result['minutes']:.1f} min at concurrency {result['concurrency']}, "
        f"{result['window_s']:.0f} s windows, {result['attack_cycles']} attack cycles; "
        f"{result['server_successes']:,} normal requests served",
        f"  {'window':>6} {'ends at s':>9} {'infer/s':>9} {'p99 ms':>8}",
    ]
    for w in result["windows"]:
        p99_ms = w["p99_us"] / 1000
        lines.append(f"  {w['pass']:>6} {w['end_s']:>9.0f} {w['throughput']:>9.1f} {p99_ms:>8.1f}")
    for name, seen in result["attacks"].items():
        codes = ", ".join(f"{code} {n}" for code, n in sorted(seen["codes"].items()))
        lines.append(f"  attack {name}: {codes} ({seen['seconds']:.1f} s in all)")
    growth = result["memory_growth"]
    lines += [
        f"  failed normal requests: {result['server_failures']} (server), "
        f"{len(result['perf_analyzer_errors'])} error lines (perf_analyzer)",
        f"  health: {result['health_calls']} checks, slowest {result['health_worst_s']:.3f} s, "
        f"{len(result['health_failures'])} failed",
        f"  RSS: first window {result['rss_first_window_mb']:.1f} MiB, last "
        f"{result['rss_last_window_mb']:.1f} MiB, peak {result['rss_peak_mb']:.1f} MiB: "
        + (f"growth {growth:+.1%} (limit +10%)" if growth is not None else "no samples"),
        f"  server exit status after SIGTERM: {result['server_exit']}",
    ]
    return "\n".join(lines)
