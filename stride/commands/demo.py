"""stride demo: the pipeline on the bundled digits, end to end on one machine."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

NAME = "demo"
HELP = "train the default CNN on the bundled digits and report its test accuracy"
ORDER = 1


def default_config() -> Path:
    """configs/digits.yaml from the working directory, else from the source tree."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = base / "configs" / "digits.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError("configs/digits.yaml not found; pass --config")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="run config (default configs/digits.yaml)")
    parser.add_argument(
        "--runs",
        default=os.environ.get("STRIDE_RUNS", "runs"),
        help="run store root (default ./runs)",
    )
    parser.add_argument(
        "--repository",
        default="repository",
        help="model repository to export into (default ./repository)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.export import export_run
    from pipeline.run import train_local
    from stride.commands.train import print_epoch

    start = time.perf_counter()
    cfg = load_config(args.config or default_config())
    print(
        f"[demo] training {cfg.model.name} on {cfg.data.name} ({cfg.optimizer.name}, "
        f"up to {cfg.training.epochs} epochs)",
        flush=True,
    )
    run_dir, summary = train_local(cfg, runs=args.runs, experiment="demo", on_epoch=print_epoch)
    result = export_run(run_dir.path, args.repository)
    print(
        f"[demo] test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} "
        f"epochs (best epoch {summary['best_epoch']})"
    )
    print(f"[demo] run:   {run_dir.path}")
    print(
        f"[demo] model: {result.path} (ONNX Runtime vs PyTorch max abs diff "
        f"{result.max_abs_diff:.1e})"
    )
    print(f"[demo] done in {time.perf_counter() - start:.1f}s")
    return 0
