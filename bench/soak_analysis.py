"""The analysis server's adversarial soak: `stride serve-analysis` started as deploy/
starts it, under the pod's memory limit, a well-behaved client, and a hostile one
cycling through the attacks of bench/analysis_attacks.py and bench/grpc_attacks.py.

    python bench/soak_analysis.py --minutes 10 [--json results/soak_analysis.json]
    python bench/soak.py --phase analysis --minutes 10     # the same, from `make soak`

The server is Deployment stride-analysis's command line (bench/deployed.py: --runs,
--port, --health-port, --grace-period, TLS, the token; every limit at its default) in a
cgroup with the pod's memory limit where the machine allows, else its resident memory
is measured against that limit. Its store holds a normal experiment (`opt`: two
optimizers, three seeds), 24 runs to draw (`render`), five legal runs of 25 MB each
that parse into about 75 MB each (`big`: together over the 256 MiB budget, and over
the half of it one client may hold), and two running runs whose last line never ends,
one under and one over the 1 MiB a line may be (`live`).

The well-behaved client, from 127.0.0.1, every 100 ms: the kubelet's readiness probe
(health Check on the plaintext health port, with the probe's deadline: 1 s, from a
process of its own; the same probe calls an idle control server started the same way,
so that a probe missed because the machine is loaded shows as such), and
ListExperiments and a CompareRuns of `opt` with the token (10 s).
The hostile client, from 127.0.0.2 (through bench/relay.py), in a loop, with the token:
12 large renders with a 2 s deadline; 16 WatchRun streams on the unfinished line for
3 s; 8 on the line over the limit; a GetRun of each big run; a CompareRuns of all of
them; and without the token: 40 streams announcing 60 MB GetRun messages and withholding
their end, 100 silent connections past the handshake timeout, 32 health Watch streams.

Pass, printed and checked (the exit status is 1 otherwise): no call of the
well-behaved client failed or missed its deadline; the server's peak resident memory
stayed under 75% of the pod's limit and (with the cgroup) the kernel never OOM-killed
it; every attack got a clear answer (the codes in CLEAR); the server exited 0 within
the pod's grace period after SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
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
from bench import grpc_attacks  # noqa: E402
from bench.attacks import Outcome, Probe, idle_streams  # noqa: E402
from bench.deployed import Served, serve_analysis  # noqa: E402
from bench.relay import Relay  # noqa: E402
from bench.servers import rss_mb  # noqa: E402
from bench.soak_adversarial import (  # noqa: E402
    ATTACKER,
    MAX_RSS_SHARE,
    Probes,
    _LoadAverage,
    readiness_report,
)
from services.generated.stride.analysis.v1 import analysis_pb2 as pb  # noqa: E402
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc  # noqa: E402

GET_RUN = "/stride.analysis.v1.AnalysisService/GetRun"
CLEAR = {
    "slow renders": {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "OK"},
    "watchers of an unfinished line": {"DEADLINE_EXCEEDED", "OK"},
    "watchers of a line over the limit": {"FAILED_PRECONDITION"},
    "GetRun of large runs": {"OK", "RESOURCE_EXHAUSTED"},
    "CompareRuns of large runs": {"OK", "RESOURCE_EXHAUSTED"},
    "withheld 60 MB messages without the token": {"UNAUTHENTICATED"},
    "silent gRPC connections": {"closed", "refused"},
    "health Watch streams without the token": {"open", "RESOURCE_EXHAUSTED"},
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

    def __init__(self, served: Served, relay: Relay) -> None:
        self.served = served
        self.address = f"127.0.0.1:{relay.port}"  # the server, as seen from 127.0.0.2
        self.ca = served.ca.read_bytes()
        self.auth = served.metadata
        self.outcomes: dict[str, Outcome] = {}
        self.cycles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)

    def _record(self, outcome: Outcome, name: str) -> None:
        total = self.outcomes.setdefault(name, Outcome(name))
        total.codes.update(outcome.codes)
        total.seconds += outcome.seconds

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(self.ca))

    def _cycle(self, channel: grpc.Channel) -> None:
        auth = self.auth
        stub = pb_grpc.AnalysisServiceStub(channel)
        request = attacks.render_request("render", 2400)
        renders, _ = attacks.slow_renders(channel, request, 12, timeout=2.0, metadata=auth)
        self._record(renders, "slow renders")
        for name, run_id, count in (
            ("watchers of an unfinished line", "tail", 16),
            ("watchers of a line over the limit", "longline", 8),
        ):
            outcome = attacks.watchers(
                self.address, "live", run_id, count, 3.0, metadata=auth, ca=self.ca
            )
            self._record(outcome, name)
        gets = Outcome("GetRun of large runs")
        began = time.monotonic()
        for i in range(5):
            request_run = pb.GetRunRequest(experiment="big", run_id=f"big{i}", last_epoch=1)
            gets.add(_code(lambda r=request_run: stub.GetRun(r, timeout=120, metadata=auth)))
        gets.seconds = time.monotonic() - began
        self._record(gets, gets.name)
        compare = Outcome("CompareRuns of large runs")
        began = time.monotonic()
        selection = pb.RunSelection(experiment="big", group_by="seed")
        compare.add(
            _code(
                lambda: stub.CompareRuns(
                    pb.CompareRunsRequest(selection=selection), timeout=120, metadata=auth
                )
            )
        )
        compare.seconds = time.monotonic() - began
        self._record(compare, compare.name)
        self._grpc_attacks()

    def _grpc_attacks(self) -> None:
        """The gRPC admission attacks, without the token: withheld messages, silent
        connections, health Watch streams."""
        port = self.served.port("grpc")
        tls = ssl.create_default_context(cafile=str(self.served.ca))
        name = "withheld 60 MB messages without the token"
        outcome = grpc_attacks.withheld(
            name, "127.0.0.1", port, GET_RUN, streams=40, size=60 << 20, seconds=3, tls=tls,
            source=ATTACKER,
        )  # fmt: skip
        self._record(outcome, name)
        name = "silent gRPC connections"
        self._record(grpc_attacks.silent(name, "127.0.0.1", port, 100, 15), name)

        def watch(ch: grpc.Channel, _: Any) -> Any:
            return health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())

        name = "health Watch streams without the token"
        self._record(idle_streams(watch, self.channel, 32, 3.0, name), name)

    def _run(self) -> None:
        with self.channel() as channel:
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
        runs = Path(tmp) / "runs"
        write_store(runs, big_mb)
        served = serve_analysis(Path(tmp) / "pod", runs)
        control = serve_analysis(Path(tmp) / "control", runs)
        try:
            with served.channel() as channel:
                stub = pb_grpc.AnalysisServiceStub(channel)
                auth = served.metadata
                opt = pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt"))
                analysis_checks = {
                    "ListExperiments": lambda t: stub.ListExperiments(
                        pb.ListExperimentsRequest(), timeout=10.0, metadata=auth
                    ),
                    "CompareRuns": lambda t: stub.CompareRuns(opt, timeout=10.0, metadata=auth),
                }

                # Warm: the store is read once (the big runs take a while).
                stub.ListExperiments(pb.ListExperimentsRequest(), timeout=300, metadata=auth)
                stub.CompareRuns(opt, timeout=300, metadata=auth)
                start = time.monotonic()
                probes = Probes(served, control, "")
                with (
                    Relay(served.port("grpc"), source=ATTACKER) as relay,
                    Probe({}, rss_of=served.pid) as probe,  # resident memory every 100 ms
                    Probe(analysis_checks, timeout=10.0) as analysis,
                ):
                    loads = _LoadAverage().start()
                    hostile = Hostile(served, relay).start()
                    time.sleep(minutes * 60)
                    hostile.stop()
                    load = loads.stop()
                    readiness = probes.stop()
                elapsed = time.monotonic() - start
            rss_end = rss_mb(served.pid)
            alive = served.server.alive()
        finally:
            exit_code, exit_s = served.stop()
            control.stop()
        memory = served.server.memory_figures()
    return {
        "minutes": elapsed / 60,
        "server": served.server.argv[3:],
        "attack_cycles": hostile.cycles,
        "attacks": {
            name: {"codes": dict(o.codes), "seconds": round(o.seconds, 1)}
            for name, o in hostile.outcomes.items()
        },
        "readiness": readiness,
        "analysis_calls": analysis.calls,
        "analysis_failures": analysis.failures[:10],
        "analysis_worst_s": analysis.worst,
        "rss_peak_mb": max(probe.peak_rss, memory["rss_peak_mb"]),  # sampled every 100 ms
        "rss_end_mb": rss_end,
        "memory": memory,
        "alive": alive,
        "load_average": {"min": min(load, default=0), "max": max(load, default=0),
                         "mean": sum(load) / len(load) if load else 0, "cores": os.cpu_count()},
        "server_exit": exit_code,
        "server_exit_s": exit_s,
        "grace_period_s": served.server.pod.grace_period,
    }  # fmt: skip


def check(result: dict[str, Any]) -> list[str]:
    """The pass criteria that failed (empty: the soak passed)."""
    from bench.soak_adversarial import memory_failures, readiness_failures

    failed = []
    failed += readiness_failures(result["readiness"])
    if result["analysis_failures"]:
        failed.append(f"analysis calls failed: {result['analysis_failures'][:3]}")
    failed += memory_failures(result)
    if not result["attack_cycles"]:
        failed.append("the hostile client finished no cycle")
    for name, seen in result["attacks"].items():
        unclear = {c: n for c, n in seen["codes"].items() if c not in CLEAR[name]}
        if unclear:
            failed.append(f"{name}: answers other than a clear one: {unclear}")
    if result["server_exit"] != 0 or result["server_exit_s"] >= result["grace_period_s"]:
        failed.append(
            f"server exit {result['server_exit']} {result['server_exit_s']:.1f} s after "
            f"SIGTERM (the pod's grace period: {result['grace_period_s']:g} s)"
        )
    return failed


def report(result: dict[str, Any]) -> str:
    """The soak's figures as text."""
    memory, load = result["memory"], result["load_average"]
    lines = [
        f"analysis soak (serve-analysis as deploy/ runs it): {result['minutes']:.1f} min, "
        f"{result['attack_cycles']} attack cycles",
        f"  machine: {load['cores']} cores, load average {load['min']:.1f} to "
        f"{load['max']:.1f} (mean {load['mean']:.1f})",
    ]
    for name, seen in result["attacks"].items():
        codes = ", ".join(f"{code} {n}" for code, n in sorted(seen["codes"].items()))
        lines.append(f"  attack {name}: {codes} ({seen['seconds']:.0f} s in all)")
    limit = f"the pod's {memory['limit_mb']:.0f} MiB"
    if memory["mode"] == "cgroup":
        limit += (
            f" as a cgroup: peak charge {memory['cgroup_peak_mb']:.0f} MiB (page cache "
            f"included), {memory['failcnt']} charges at the limit, {memory['oom_kills']} OOM kills"
        )
    else:
        limit += " (no cgroup here: RSS measured against it)"
    lines += [
        *readiness_report(result["readiness"]),
        f"  ListExperiments and CompareRuns: {result['analysis_calls']} calls, slowest "
        f"{result['analysis_worst_s']:.3f} s (deadline 10 s), "
        f"{len(result['analysis_failures'])} failed",
        f"  RSS: peak {result['rss_peak_mb']:.0f} MiB (limit {MAX_RSS_SHARE:.0%} of {limit}), "
        f"at the end {result['rss_end_mb']:.0f} MiB",
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
