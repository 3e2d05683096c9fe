"""stride demo: the whole pipeline on the bundled digits, end to end on one machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stride.commands._paths import local_path, store_location

NAME = "demo"
HELP = (
    "sweep 5 optimizers x 2 seeds on the digits (Ray), export the best, serve it, "
    "classify test images over gRPC, compare the optimizers"
)
ORDER = 1


def default_config() -> Path:
    """configs/digits.yaml from the working directory, else from the source tree."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = base / "configs" / "digits.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError("configs/digits.yaml not found; pass --config")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=local_path, help="run config (default configs/digits.yaml)"
    )
    parser.add_argument(
        "--runs",
        type=store_location,
        default=os.environ.get("STRIDE_RUNS", "runs"),
        help="run store root: a folder or an object store URI (env STRIDE_RUNS, default ./runs)",
    )
    parser.add_argument(
        "--repository",
        type=local_path,
        default="repository",
        help="model repository to export into (default ./repository)",
    )
    parser.add_argument(
        "--picture",
        type=local_path,
        default="demo-comparison.png",
        help="where the comparison PNG goes (default ./demo-comparison.png)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per optimizer (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    parser.add_argument("--images", type=int, default=8, help="test images to classify (default 8)")


def run(args: argparse.Namespace) -> int:
    from stride.demo import DemoOptions, run_demo

    if not 1 <= args.images <= 64:
        raise ValueError(f"--images must be 1..64, got {args.images}")
    return run_demo(
        DemoOptions(
            config=args.config or default_config(),
            runs=args.runs,
            repository=args.repository,
            picture=args.picture,
            seeds=args.seeds,
            images=args.images,
            epochs=args.epochs,
        )
    )
