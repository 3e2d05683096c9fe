"""A flame graph of `stride serve` under perf_analyzer load (docs/img/serve-flame-*.svg).

    pip install py-spy                      # not a dependency of Stride
    python bench/profile_serve.py --model digits --concurrency 16 --out serve.svg

py-spy samples the server's threads while they hold the GIL (`--gil`): with one core's
worth of Python running the whole front end, those samples are where a request's time
goes. Sampling slows the server, so the throughput printed beside the graph is lower
than an unprofiled run's; the shares are what the graph is for.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import free_port, perf_run, start_stride_serve, stop, wait_ready  # noqa: E402


def py_spy() -> str:
    """The py-spy executable (this venv's, else PATH's); SystemExit naming the fix if none."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def portable(svg: Path, spy: str) -> None:
    """Drop this machine's paths from the graph's title (py-spy puts its command line
    there): the graph is committed to the docs."""
    text = svg.read_text()
    text = text.replace(spy, "py-spy").replace(str(svg.resolve()), svg.name)
    svg.write_text(text.replace(str(ROOT) + "/", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("digits", "cnn"), default="digits")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10, help="sampling time")
    parser.add_argument("--out", type=Path, default=Path("serve-flame.svg"))
    args = parser.parse_args(argv)
    spy = py_spy()
    from bench import serving_sweep

    with tempfile.TemporaryDirectory(prefix="stride-profile-") as tmp:
        serving_sweep.write_models(Path(tmp), (args.model,))
        port = free_port()
        server = start_stride_serve(Path(tmp), port)
        try:
            wait_ready(port, server)
            command = [
                spy, "record", "--pid", str(server.pid), "--gil", "--rate", "200",
                "--duration", str(args.seconds), "--format", "flamegraph",
                "--output", str(args.out.resolve()),
            ]  # fmt: skip
            recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            window = max(1000, (args.seconds - 2) * 1000 // 6)
            run = perf_run(args.model, port, args.concurrency, window, retry=False)
            recorder.wait(timeout=args.seconds + 60)
        finally:
            stop(server)
    portable(args.out, spy)
    print(
        f"{args.out}: {args.model}, concurrency {args.concurrency}, "
        f"{run['throughput']:.0f} infer/s while sampled"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
