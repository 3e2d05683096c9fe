"""stride train: one training run from a config file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

NAME = "train"
HELP = "train one model from a config file and write its run directory"
ORDER = 10


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --set, --runs, --experiment, --download: shared by train and sweep."""
    parser.add_argument(
        "--config", required=True, help="run config (YAML), e.g. configs/digits.yaml"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optimizer.name=sgd (repeatable)",
    )
    parser.add_argument(
        "--runs",
        default=os.environ.get("STRIDE_RUNS", "runs"),
        help="run store root (default ./runs, env STRIDE_RUNS)",
    )
    parser.add_argument(
        "--experiment", default="default", help="experiment folder in the run store"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let torchvision data sets (mnist, cifar10, ...) download into data.root",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--name", help="run id (default: <model>-<time>-<hex>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run --name from its last checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def load(args: argparse.Namespace) -> Any:
    """The validated config with --set and --download applied; prints the model summary."""
    from pipeline.config import load_config

    overrides = list(args.overrides)
    if args.download:
        overrides.append("data.download=true")
    if getattr(args, "quiet", False):
        overrides.append("training.progress=false")
    return load_config(args.config, overrides)


def print_epoch(record: dict[str, Any]) -> None:
    from tqdm.auto import tqdm

    tqdm.write(
        f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}  val loss {record['val_loss']:.4f} "
        f"acc {record['val_accuracy']:.4f}  lr {record['lr']:.2e}  "
        f"{record['epoch_seconds']:.2f}s {record['images_per_second']:,.0f} img/s",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.data import describe
    from pipeline.run import train_local
    from pipeline.spec import format_plan, validate

    cfg = load(args)
    if not args.quiet:
        print(format_plan(validate(cfg), describe(cfg.data).input_shape), file=sys.stderr)
    run_dir, summary = train_local(
        cfg,
        runs=args.runs,
        experiment=args.experiment,
        name=args.name,
        resume=args.resume,
        on_epoch=None if args.quiet else print_epoch,
    )
    print(f"run: {run_dir.path}")
    print(
        f"test accuracy: {summary['test_accuracy']:.4f}  test loss: {summary['test_loss']:.4f}  "
        f"best epoch: {summary['best_epoch']}  epochs: {summary['epochs_run']}  "
        f"wall: {summary['wall_seconds']:.1f}s"
    )
    return 0
