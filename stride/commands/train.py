"""stride train: one training run from a config file, on Ray Train (or --local)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runstore import EpochRecord

from stride.commands._paths import local_path, store_location

NAME = "train"
HELP = "train one model from a config file (Ray Train workers, CPU or GPU)"
ORDER = 10


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by train and sweep: config, overrides, run store, Ray, scaling."""
    parser.add_argument(
        "--config",
        required=True,
        type=local_path,
        help="run config (YAML), e.g. configs/digits.yaml",
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
        type=store_location,
        default=os.environ.get("STRIDE_RUNS", "runs"),
        help="run store root: a path, file://PATH or an object store URI such as "
        "s3://BUCKET/PREFIX (default ./runs, env STRIDE_RUNS)",
    )
    parser.add_argument(
        "--experiment", default="default", help="experiment folder in the run store"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let torchvision data sets (mnist, cifar10, ...) download into data.root",
    )
    parser.add_argument("--workers", type=int, help="Ray Train workers (overrides scaling.workers)")
    parser.add_argument("--gpu", action="store_true", help="train on GPUs (scaling.use_gpu=true)")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: env RAY_ADDRESS, else a local instance)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--name", help="run id (default: <model>-<time>-<hex>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run --name from its last checkpoint"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="train in this process with the plain loop, without Ray",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def overrides_of(args: argparse.Namespace) -> list[str]:
    """--set items plus what the convenience flags mean."""
    items = list(args.overrides)
    if args.download:
        items.append("data.download=true")
    if args.workers is not None:
        items.append(f"scaling.workers={args.workers}")
    if args.gpu:
        items.append("scaling.use_gpu=true")
    if getattr(args, "quiet", False):
        items.append("training.progress=false")
    return items


def print_epoch(record: EpochRecord) -> None:
    from tqdm.auto import tqdm

    tqdm.write(
        f"epoch {record.epoch:>3}  train loss {record.train_loss:.4f} "
        f"acc {record.train_accuracy:.4f}  val loss {record.val_loss:.4f} "
        f"acc {record.val_accuracy:.4f}  lr {record.lr:.2e}  "
        f"{record.epoch_seconds:.2f}s {record.images_per_second:,.0f} img/s",
        file=sys.stderr,
    )


def train_with_progress(cfg: Any, args: argparse.Namespace, name: str | None) -> tuple[Any, Any]:
    """Run on Ray in a thread while this thread prints the epochs from the run store."""
    from pipeline.ray_train import check_fits, ensure_ray, follow_run, train_on_ray
    from pipeline.run import resolve_run

    check_fits(cfg, ensure_ray(args.address))  # before the run's folder is made
    run = resolve_run(args.runs, args.experiment, name, cfg, args.resume)
    result: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = train_on_ray(
                cfg,
                runs=args.runs,
                experiment=args.experiment,
                name=run.name,
                resume=args.resume,
            )
        except BaseException as exc:  # re-raised below, in the main thread
            result["error"] = exc
        finally:
            done.set()

    if args.resume:
        print(f"resuming {run}", file=sys.stderr)
    thread = threading.Thread(target=target, name="stride-train", daemon=True)
    thread.start()
    follow_run(run, (lambda r: None) if args.quiet else print_epoch, done)
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.data import describe
    from pipeline.spec import format_plan, validate

    cfg = load_config(args.config, overrides_of(args))
    if not args.quiet:
        print(format_plan(validate(cfg), describe(cfg.data).input_shape), file=sys.stderr)
    if args.local:
        from pipeline.run import train_local

        if args.resume:
            print(f"resuming run {args.name} of experiment {args.experiment}", file=sys.stderr)
        run_dir, summary = train_local(
            cfg,
            runs=args.runs,
            experiment=args.experiment,
            name=args.name,
            resume=args.resume,
            on_epoch=None if args.quiet else print_epoch,
        )
    else:
        from pipeline.ray_train import RunFailedError

        try:
            run_dir, summary = train_with_progress(cfg, args, args.name)
        except RunFailedError as exc:  # its summary.json says the same
            print(f"stride train: {exc}", file=sys.stderr)
            return 1
    print(f"run: {run_dir}")
    print(
        f"test accuracy: {summary.test_accuracy:.4f}  test loss: {summary.test_loss:.4f}  "
        f"best epoch: {summary.best_epoch}  epochs: {summary.epochs_run}  "
        f"wall: {summary.wall_seconds:.1f}s"
    )
    return 0
