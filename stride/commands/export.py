"""stride export: a trained run -> a new version in a Triton-style model repository."""

from __future__ import annotations

import argparse

from stride.commands._paths import local_path, store_location

NAME = "export"
HELP = "export a completed run to ONNX as a new version in a model repository"
ORDER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=store_location,
        help="runs/<experiment>/<run-id> (or its URI on an object store)",
    )
    parser.add_argument(
        "--repository",
        required=True,
        type=local_path,
        metavar="REPO",
        help="model repository root (created if absent)",
    )
    parser.add_argument("--name", help="model name (default: the config's model.name)")
    parser.add_argument(
        "--max-batch-size", type=int, default=64, help="max_batch_size in config.pbtxt (default 64)"
    )
    parser.add_argument(
        "--instance-kind",
        choices=["cpu", "gpu", "auto"],
        default="cpu",
        help="where the server runs the model (config.pbtxt instance_group): cpu, gpu "
        "(CUDA, or the model fails to load) or auto (CUDA when present); default cpu",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.export import export_run

    result = export_run(
        args.run_dir,
        args.repository,
        name=args.name,
        max_batch_size=args.max_batch_size,
        instance_kind=args.instance_kind,
    )
    print(
        f"exported {result.path} (version {result.version}); "
        f"ONNX Runtime vs PyTorch max abs diff {result.max_abs_diff:.1e}"
    )
    return 0
