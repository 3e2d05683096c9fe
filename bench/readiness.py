"""The kubelet's readiness probe, in a process of its own, as the kubelet is.

A soak's hostile client runs in the soak's own process (threads, pure-Python HTTP/2
clients, a relay); a probe thread beside them waits for the interpreter as much as for
the server. This one calls grpc.health.v1 Check on the health port every `period`
seconds with the probe's deadline, as the kubelet does (a new connection each time),
until SIGTERM, then prints its figures as one JSON line.

    python -m bench.readiness --port 8081 --service inference.GRPCInferenceService --deadline 1

`Readiness` starts one from a soak and returns its figures when stopped. A soak runs a
second one against an idle server started the same way (the control): when both miss
their deadline, the machine's load is the cause, not the attack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def probe(port: int, service: str, deadline: float, period: float, stop: threading.Event) -> dict:
    """Call until `stop` is set; the figures: calls, failed (no SERVING within the deadline),
    late (took the deadline or longer, connecting included, whatever the answer), the
    slowest and the 99th percentile in seconds, the first failures."""
    from bench.servers import health_status

    calls = failed = late = 0
    worst = 0.0
    failures: list[str] = []
    times: list[float] = []
    while not stop.is_set():
        began = time.monotonic()
        status = health_status(port, service, timeout=deadline)
        took = time.monotonic() - began
        calls += 1
        times.append(took)
        worst = max(worst, took)
        late += took >= deadline
        if status != 1:
            failed += 1
            if len(failures) < 10:
                failures.append(f"status {status} after {took:.2f} s")
        stop.wait(max(0.0, period - took))
    times.sort()
    p99 = times[int(0.99 * (len(times) - 1))] if times else 0.0
    return {
        "calls": calls,
        "failed": failed,
        "late": late,
        "worst_s": worst,
        "p99_s": p99,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="")
    parser.add_argument("--deadline", type=float, default=1.0)
    parser.add_argument("--period", type=float, default=0.1)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    figures = probe(args.port, args.service, args.deadline, args.period, stop)
    print(json.dumps(figures), flush=True)
    return 0


class Readiness:
    """`python -m bench.readiness` against a health port, from start to `stop()`."""

    def __init__(self, port: int, service: str = "", deadline: float = 1.0) -> None:
        self.deadline = deadline
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.readiness", "--port", str(port), "--service", service,
             "--deadline", str(deadline)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def stop(self) -> dict[str, Any]:
        """End the probe; its figures (with `deadline`)."""
        self._proc.send_signal(signal.SIGTERM)
        out, _ = self._proc.communicate(timeout=60)
        lines = out.strip().splitlines()
        figures: dict[str, Any] = json.loads(lines[-1]) if lines else {"calls": 0, "failed": -1}
        figures["deadline_s"] = self.deadline
        return figures


if __name__ == "__main__":
    sys.exit(main())
