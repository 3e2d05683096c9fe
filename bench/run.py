"""Every benchmark of Stride, one table at the end, the same figures as JSON under results/.

    python bench/run.py            # make bench (every section at full length)
    python bench/run.py --quick    # make bench-quick (small data, short windows)
    python bench/run.py --gpu      # make bench GPU=1: CUDA, bf16, channels_last
    python bench/run.py --only serving,startup

Each figure is divided by a baseline measured in the same run, next to it in time:
these machines are noisy, so a ratio measured in one run holds where an absolute
time does not. Sections: training (bench/training.py), streamed training data
(bench/data.py), serving (bench/serving.py and bench/serving_sweep.py), scaling with
cores (bench/scaling.py: `stride serve --workers N` under one connection per
concurrent request), startup and memory (bench/startup.py), the KServe peer
(bench/peer.py), real NVIDIA Triton serving the same model.onnx files
(bench/triton_peer.py, gRPC and HTTP), server models under the same load
(bench/frontends.py: gRPC's threaded server and grpc.aio, echo and batching, beside
`stride serve`), and in GPU mode inference on ONNX Runtime's CUDA provider.
The JSON adds the machine, library versions, git revision and every raw figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import environment, rows  # noqa: E402

SECTIONS = (
    "training",
    "data",
    "serving",
    "scaling",
    "startup",
    "peer",
    "triton",
    "frontends",
    "gpu_inference",
)


def _training(mode: str, gpu: bool) -> dict[str, Any]:
    from bench import training

    if mode == "full":
        return training.measure(quick=False, gpu=gpu)
    samples = 256 if mode == "smoke" else 384
    return training.measure(quick=True, gpu=gpu, samples=samples, two_workers=False, sweeps=False)


def _data(mode: str) -> dict[str, Any]:
    from bench import data

    return data.measure(mode)


def _serving(mode: str, repo: Path) -> dict[str, Any]:
    from bench import serving, serving_sweep

    if mode == "full":
        out = {"serving_py": serving.measure()}
        out["digits"] = serving_sweep.sweep(repo, "digits", serving.CONCURRENCY)
        return out
    if mode == "smoke":
        kw: dict[str, Any] = {
            "window_ms": 500,
            "batch_sizes": (1, 8),
            "ref_seconds": 0.3,
            "retry": False,
        }
        digits = serving_sweep.sweep(repo, "digits", (1,), **kw)
        stride = digits["served"][1]
        echo = serving_sweep.echo_comparison(repo, 500, 1, stride, retry=False)
        return {"digits": digits, "echo": echo}
    kw = {"window_ms": 1000, "batch_sizes": (1, 8, 64), "ref_seconds": 0.5, "retry": False}
    cnn = serving_sweep.sweep(repo, "cnn", (1, 16), **kw)
    digits = serving_sweep.sweep(repo, "digits", (16,), **kw)
    echo = serving_sweep.echo_comparison(repo, 1000, 16, digits["served"][16], retry=False)
    return {"cnn": cnn, "digits": digits, "echo": echo}


def _scaling(mode: str, repo: Path) -> dict[str, Any]:
    from bench import scaling

    if mode == "full":
        return scaling.measure(repo, ("digits", "cnn"), (1, 2, 4, 8), rounds=2, seconds=5.0)
    if mode == "smoke":
        return scaling.measure(repo, ("digits",), (1, 2), rounds=1, connections=8, seconds=1.0)
    return scaling.measure(repo, ("digits",), (1, 2), rounds=1, seconds=2.0)


def _startup(mode: str, repo: Path) -> dict[str, Any]:
    from bench import startup

    repeats = {"full": 3, "quick": 1, "smoke": 1}[mode]
    copies = {"full": 4, "quick": 2, "smoke": 1}[mode]
    model = "digits" if mode == "smoke" else "cnn"
    return {
        "ready": startup.ready_times(repo, repeats),
        "memory": startup.memory_per_model(repo / model, copies),
    }


def _peer(mode: str, repo: Path) -> dict[str, Any]:
    from bench import peer

    if mode == "full":
        models = {"digits": (1, 8, 8), "cnn": (3, 32, 32)}
        return peer.measure(repo, models, (1, 16, 64), seconds=5.0)
    concurrency, seconds = ((1,), 1.0) if mode == "smoke" else ((16,), 2.0)
    return peer.measure(repo, {"digits": (1, 8, 8)}, concurrency, seconds=seconds)


def _triton(mode: str, repo: Path) -> dict[str, Any]:
    from bench import triton_peer

    if mode == "full":
        return triton_peer.measure(
            repo, ("digits", "cnn"), (1, 16, 64), window_ms=2000, workers=(1, 2), echo=True
        )
    if mode == "smoke":
        return triton_peer.measure(repo, ("digits",), (1,), ("grpc",), 500, retry=False)
    return triton_peer.measure(repo, ("digits",), (16,), window_ms=1000, retry=False)


def _frontends(mode: str, repo: Path) -> dict[str, Any]:
    from bench import frontends

    if mode == "full":
        return frontends.measure(repo, (1, 16), window_ms=2000)
    if mode == "smoke":
        return frontends.measure(repo, (1,), 500, kinds=("aio-batch", "stride"))
    return frontends.measure(repo, (16,), window_ms=1000)


def _gpu_inference(mode: str, repo: Path) -> dict[str, Any]:
    from bench import gpu_inference

    return gpu_inference.measure(repo, quick=mode != "full")


def run(mode: str, gpu: bool, only: tuple[str, ...], out_dir: Path) -> tuple[dict[str, Any], Path]:
    """Run the chosen sections; returns the result document and where it was written."""
    from bench import serving_sweep

    started = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": 1,
        "mode": mode,
        "gpu": gpu,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": environment.machine(),
        "versions": environment.versions(),
        "git": environment.git(),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="stride-bench-repo-") as tmp:
        repo = Path(tmp)
        models = ("digits",) if mode == "smoke" else ("cnn", "digits")
        served = ("serving", "scaling", "startup", "peer", "triton", "frontends", "gpu_inference")
        if any(s in only for s in served):
            serving_sweep.write_models(repo, models)
        jobs: dict[str, Callable[[], dict[str, Any]]] = {
            "training": lambda: _training(mode, gpu),
            "data": lambda: _data(mode),
            "serving": lambda: _serving(mode, repo),
            "scaling": lambda: _scaling(mode, repo),
            "startup": lambda: _startup(mode, repo),
            "peer": lambda: _peer(mode, repo),
            "triton": lambda: _triton(mode, repo),
            "frontends": lambda: _frontends(mode, repo),
            "gpu_inference": lambda: _gpu_inference(mode, repo),
        }
        for name in SECTIONS:
            if name not in only or (name == "gpu_inference" and not gpu):
                continue
            print(f"[bench] {name} ...", flush=True)
            t0 = time.perf_counter()
            section: dict[str, Any]
            try:
                section = {"figures": jobs[name]()}
            except Exception as exc:  # one broken section must not lose the others
                traceback.print_exc()
                section = {"error": f"{type(exc).__name__}: {exc}"}
            section["seconds"] = time.perf_counter() - t0
            doc["sections"][name] = section
            print(f"[bench] {name} done in {section['seconds']:.0f} s", flush=True)
    doc["duration_s"] = time.perf_counter() - started
    doc["machine"]["load_average_end"] = environment.load_average()
    doc["table"] = rows.table(doc["sections"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"bench-{mode}{'-gpu' if gpu else ''}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    return doc, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="short version (small data, short windows)"
    )
    size.add_argument(
        "--smoke", action="store_true", help="the smallest run of every section (the test suite)"
    )
    parser.add_argument("--gpu", action="store_true", help="CUDA mode (training and inference)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder for the JSON")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    doc, path = run(mode, args.gpu, only, args.out)
    print()
    print(rows.render(doc))
    print(f"\nJSON: {path}")
    failed = [n for n, s in doc["sections"].items() if "error" in s]
    if failed:
        print(f"sections that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
