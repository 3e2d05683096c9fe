"""The analysis server's adversarial soak: `stride serve-analysis` started as deploy/
starts it, a well-behaved client, and a hostile one cycling through the attacks of
issue 25 (bench/analysis_attacks.py).

    python bench/soak_analysis.py --minutes 10 [--json results/soak_analysis.json]

The server gets the deployment's flags (deploy/k8s/base/analysis-deployment.yaml:
--runs, --port, --health-port, --grace-period 10, --auth-token-file; TLS left out)
and its default limits; it listens on [::] (both address families, as 0.0.0.0 in the
pod), so that the two clients are two peers: the hostile one over 127.0.0.1, the
well-behaved one over ::1. Its store holds a normal experiment (`opt`: two optimizers,
three seeds), 24 runs to draw (`render`), five legal runs of 25 MB each that parse
into about 75 MB each (`big`: together over the 256 MiB budget, and over the half of
it one client may hold), and two running runs
whose last line never ends, one under and one over the 1 MiB a line may be (`live`).

The well-behaved client, every 100 ms: health Check on the health port (1 s deadline,
as the kubelet), ListExperiments (5 s) and a CompareRuns of `opt` (10 s).
The hostile client, in a loop, with the token: 12 large renders with a 2 s deadline;
16 WatchRun streams on the unfinished line for 3 s; 8 on the line over the limit; a
GetRun of each big run; a CompareRuns of all of them.

Pass, printed and checked (the exit status is 1 otherwise): no call of the
well-behaved client failed or missed its deadline; the server's peak resident memory
stayed under 75% of the pod's 1 GiB limit; every attack got a clear answer (the codes
in CLEAR); the server exited 0 within 30 s of SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from bench import analysis_attacks as attacks  # noqa: E402
from bench.attacks import Outcome, Probe  # noqa: E402
from bench.servers import free_port, rss_mb, wait_ready  # noqa: E402
from services.generated.stride.analysis.v1 import analysis_pb2 as pb  # noqa: E402
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc  # noqa: E402

POD_LIMIT_MB = 1024
MAX_RSS_MB = 0.75 * POD_LIMIT_MB
TOKEN = "soak-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CLEAR = {
    "slow renders": {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "OK"},
    "watchers of an unfinished line": {"DEADLINE_EXCEEDED", "OK"},
    "watchers of a line over the limit": {"FAILED_PRECONDITION"},
    "GetRun of large runs": {"OK", "RESOURCE_EXHAUSTED"},
    "CompareRuns of large runs": {"OK", "RESOURCE_EXHAUSTED"},
}


def write_store(runs: Path, big_mb: float) -> None:
    """The soak's run store (see the module's docstring)."""
    lines = attacks.metrics_lines(10, 8)
    for optimizer in ("adam", "sgd"):
        for seed in range(3):
            folder = attacks.write_run(runs, "opt", f"{optimizer}-s{seed}", seed=seed, lines=lines)
            meta = json.loads((folder / "config.json").read_text())
            meta["config"]["optimizer"]["name"] = optimizer
            (folder / "config.json").write_text(json.dumps(meta))
    attacks.render_runs(runs, "render", 24)
    attacks.large_runs(runs, "big", 5, megabytes=big_mb)
    attacks.unfinished_line(runs, "live", "tail", 900_000)
    attacks.unfinished_line(runs, "live", "longline", 2 * 2**20)


class Hostile:
    """Cycles through the attacks until stopped; `outcomes` adds up what each one got."""

    def __init__(self, port: int) -> None:
        self.address = f"127.0.0.1:{port}"
        self.outcomes: dict[str, Outcome] = {}
        self.cycles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)

    def _record(self, outcome: Outcome, name: str) -> None:
        total = self.outcomes.setdefault(name, Outcome(name))
        total.codes.update(outcome.codes)
        total.seconds += outcome.seconds

    def _cycle(self, channel: grpc.Channel) -> None:
        stub = pb_grpc.AnalysisServiceStub(channel)
        request = attacks.render_request("render", 2400)
        renders, _ = attacks.slow_renders(channel, request, 12, timeout=2.0, metadata=AUTH)
        self._record(renders, "slow renders")
        for name, run_id, count in (
            ("watchers of an unfinished line", "tail", 16),
            ("watchers of a line over the limit", "longline", 8),
        ):
            outcome = attacks.watchers(self.address, "live", run_id, count, 3.0, metadata=AUTH)
            self._record(outcome, name)
        gets = Outcome("GetRun of large runs")
        began = time.monotonic()
        for i in range(5):
            request_run = pb.GetRunRequest(experiment="big", run_id=f"big{i}", last_epoch=1)
            gets.add(_code(lambda r=request_run: stub.GetRun(r, timeout=120, metadata=AUTH)))
        gets.seconds = time.monotonic() - began
        self._record(gets, gets.name)
        compare = Outcome("CompareRuns of large runs")
        began = time.monotonic()
        selection = pb.RunSelection(experiment="big", group_by="seed")
        compare.add(
            _code(
                lambda: stub.CompareRuns(
                    pb.CompareRunsRequest(selection=selection), timeout=120, metadata=AUTH
                )
            )
        )
        compare.seconds = time.monotonic() - began
        self._record(compare, compare.name)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            while not self._stop.is_set():
                self._cycle(channel)
                self.cycles += 1

    def start(self) -> Hostile:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(600)


def _code(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"


def adversarial(minutes: float, big_mb: float = 25) -> dict[str, Any]:
    """Run the soak and return its figures (see `check` for the verdict)."""
    with tempfile.TemporaryDirectory(prefix="stride-soak-analysis-") as tmp:
        runs, token = Path(tmp) / "runs", Path(tmp) / "token"
        write_store(runs, big_mb)
        token.write_text(TOKEN + "\n")
        port, health_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "stride.cli", "serve-analysis", f"--runs={runs}",
            "--host=[::]", f"--port={port}", f"--health-port={health_port}",
            "--grace-period=10", f"--auth-token-file={token}",
        ]  # fmt: skip
        server = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            ready_s = wait_ready(health_port, server, timeout=120)
            with (
                grpc.insecure_channel(f"[::1]:{port}") as channel,
                grpc.insecure_channel(f"[::1]:{health_port}") as health_channel,
            ):
                health = health_pb2_grpc.HealthStub(health_channel)
                stub = pb_grpc.AnalysisServiceStub(channel)
                opt = pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt"))
                analysis_checks = {
                    "ListExperiments": lambda t: stub.ListExperiments(
                        pb.ListExperimentsRequest(), timeout=5.0, metadata=AUTH
                    ),
                    "CompareRuns": lambda t: stub.CompareRuns(opt, timeout=10.0, metadata=AUTH),
                }
                health_checks = {
                    "health": lambda t: health.Check(health_pb2.HealthCheckRequest(), timeout=t)
                }
                # Warm: the store is read once (the big runs take a while).
                stub.ListExperiments(pb.ListExperimentsRequest(), timeout=300, metadata=AUTH)
                stub.CompareRuns(opt, timeout=300, metadata=AUTH)
                start = time.monotonic()
                with (
                    Probe(health_checks, timeout=1.0, rss_of=server.pid) as probe,
                    Probe(analysis_checks, timeout=10.0) as analysis,
                ):
                    hostile = Hostile(port).start()
                    time.sleep(minutes * 60)
                    hostile.stop()
                elapsed = time.monotonic() - start
            rss_end = rss_mb(server.pid)
        finally:
            stopped = time.monotonic()
            server.terminate()
            try:
                exit_code: int | None = server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                exit_code = None
            exit_s = time.monotonic() - stopped
    return {
        "minutes": elapsed / 60,
        "server_ready_s": ready_s,
        "attack_cycles": hostile.cycles,
        "attacks": {
            name: {"codes": dict(o.codes), "seconds": round(o.seconds, 1)}
            for name, o in hostile.outcomes.items()
        },
        "health_calls": probe.calls,
        "health_failures": probe.failures[:10],
        "health_worst_s": probe.worst,
        "analysis_calls": analysis.calls,
        "analysis_failures": analysis.failures[:10],
        "analysis_worst_s": analysis.worst,
        "rss_peak_mb": probe.peak_rss,
        "rss_end_mb": rss_end,
        "server_exit": exit_code,
        "server_exit_s": exit_s,
    }


def check(result: dict[str, Any]) -> list[str]:
    """The pass criteria that failed (empty: the soak passed)."""
    failed = []
    for who in ("health", "analysis"):
        if result[f"{who}_failures"]:
            failed.append(f"{who} calls failed: {result[f'{who}_failures'][:3]}")
    if result["rss_peak_mb"] >= MAX_RSS_MB:
        failed.append(f"peak RSS {result['rss_peak_mb']:.0f} MiB, limit {MAX_RSS_MB:.0f} MiB")
    if not result["attack_cycles"]:
        failed.append("the hostile client finished no cycle")
    for name, seen in result["attacks"].items():
        unclear = {c: n for c, n in seen["codes"].items() if c not in CLEAR[name]}
        if unclear:
            failed.append(f"{name}: answers other than a clear one: {unclear}")
    if result["server_exit"] != 0 or result["server_exit_s"] >= 30:
        failed.append(
            f"server exit {result['server_exit']} {result['server_exit_s']:.1f} s after SIGTERM"
        )
    return failed


def report(result: dict[str, Any]) -> str:
    """The soak's figures as text."""
    lines = [
        f"analysis soak: {result['minutes']:.1f} min, {result['attack_cycles']} attack cycles",
    ]
    for name, seen in result["attacks"].items():
        codes = ", ".join(f"{code} {n}" for code, n in sorted(seen["codes"].items()))
        lines.append(f"  attack {name}: {codes} ({seen['seconds']:.0f} s in all)")
    lines += [
        f"  health: {result['health_calls']} checks, slowest {result['health_worst_s']:.3f} s, "
        f"{len(result['health_failures'])} failed",
        f"  ListExperiments and CompareRuns: {result['analysis_calls']} calls, slowest "
        f"{result['analysis_worst_s']:.3f} s, {len(result['analysis_failures'])} failed",
        f"  RSS: peak {result['rss_peak_mb']:.0f} MiB (limit {MAX_RSS_MB:.0f} MiB, 75% of the "
        f"pod's {POD_LIMIT_MB} MiB), at the end {result['rss_end_mb']:.0f} MiB",
        f"  server exit status {result['server_exit']}, {result['server_exit_s']:.1f} s after "
        "SIGTERM",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--big-mb", type=float, default=25.0, help="size of each big run's file")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = adversarial(args.minutes, args.big_mb)
    failed = check(result)
    result["failed"] = failed
    print(report(result))
    for reason in failed:
        print(f"FAILED: {reason}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
