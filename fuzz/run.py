"""Run every atheris harness for a while, each in its own process; report inputs run and findings.

    python -m fuzz.run --seconds 300            # what `make fuzz` runs (FUZZ_SECONDS)
    python -m fuzz.run --seconds 5 --only image

Corpora and crash artifacts live under `results/fuzz/` (not committed), so each
run starts from what the last one found. A harness that crashes, hangs (libFuzzer's
per-input -timeout), runs out of memory or exits without finishing counts as a
finding: the exit status is 1 and the artifact path is printed. Turn each finding
into a regression test in tests/fuzz/test_regressions.py, then fix it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("infer", "image", "names", "config_pbtxt", "run_config", "run_store")
STARTUP_S = 120  # imports (torch for run_config), the workspace, seeds: on a busy machine


@dataclass
class Result:
    """One harness run."""

    target: str
    ok: bool
    runs: int  # inputs executed
    seconds: float  # wall time of the process
    new_units: int  # inputs that reached new coverage
    peak_rss_mb: int
    finding: str  # the first lines of the report when not ok
    artifacts: list[str]


def _stat(output: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", output)
    return int(found[-1]) if found else 0


def _save_input(output: str, artifacts: Path, target: str) -> None:
    """Keep the crashing input: libFuzzer prints it (Base64) but, under atheris, an uncaught
    Python exception ends the process before a crash file is written."""
    found = re.findall(r"^Base64: (\S*)$", output, re.MULTILINE)
    if found:
        data = base64.b64decode(found[-1])
        digest = hashlib.sha1(data).hexdigest()[:16]
        (artifacts / f"{target}-crash-{digest}").write_bytes(data)


def run_target(
    target: str,
    seconds: float,
    work: Path,
    *,
    runs: int | None = None,
    python: str = sys.executable,
) -> Result:
    """Fuzz one target for `seconds` (or `runs` inputs) in a subprocess; a crash is a Result."""
    corpus = work / "corpus" / target
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.glob(f"{target}-*"))
    command = [
        python,
        "-m",
        f"fuzz.fuzz_{target}",
        f"-max_total_time={max(1, int(seconds))}",
        f"-artifact_prefix={artifacts}/{target}-",
        str(corpus),
    ]
    if runs is not None:
        command.insert(3, f"-runs={runs}")
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="stride-fuzz-run-") as tmp:
            done = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=seconds + STARTUP_S,
                env=dict(os.environ, STRIDE_FUZZ_TMP=tmp),
            )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        output = f"harness did not finish within {seconds + STARTUP_S:.0f} s\n{tail}"
        code = -1
    wall = time.perf_counter() - start
    finished = re.search(r"Done (\d+) runs in", output)
    ok = code == 0 and finished is not None and "Uncaught Python exception" not in output
    report = ""
    if not ok:
        lines = [
            line
            for line in output.splitlines()
            if not line.startswith(("#", "INFO:", "WARNING: Failed to find"))
        ]
        report = "\n".join(lines[-40:])
    if not ok:
        _save_input(output, artifacts, target)
    new = sorted(str(p) for p in set(artifacts.glob(f"{target}-*")) - before)
    return Result(
        target=target,
        ok=ok,
        runs=int(finished.group(1)) if finished else _stat(output, "number_of_executed_units"),
        seconds=round(wall, 1),
        new_units=_stat(output, "new_units_added"),
        peak_rss_mb=_stat(output, "peak_rss_mb"),
        finding=report,
        artifacts=new,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="per target (default 60)")
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fuzz")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    results = []
    for target in chosen:
        print(f"fuzzing {target} for {args.seconds:.0f} s ...", flush=True)
        result = run_target(target, args.seconds, args.out)
        results.append(result)
        if not result.ok:
            print(result.finding, file=sys.stderr)
    print(
        f"\n{'target':<14} {'inputs run':>11} {'seconds':>8} {'new cov':>8} {'rss MB':>7}  result"
    )
    for r in results:
        verdict = "ok" if r.ok else "FINDING " + " ".join(r.artifacts)
        print(
            f"{r.target:<14} {r.runs:>11,} {r.seconds:>8.0f} {r.new_units:>8} "
            f"{r.peak_rss_mb:>7}  {verdict}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"seconds_per_target": args.seconds, "results": [asdict(r) for r in results]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
