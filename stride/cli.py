"""The `stride` entry point.

Each subcommand lives in its own module under `stride.commands` and exposes
`NAME`, `HELP`, `ORDER`, `add_arguments(parser)` and `run(args) -> int`. Modules
import their heavy dependencies (torch, Ray, grpc) inside `run`, so that
`stride --help` is fast and the serving image, which has no torch, can run
`stride serve`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from types import ModuleType

from stride import __version__, commands


def _command_modules() -> list[ModuleType]:
    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"stride.commands.{info.name}")
        found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stride",
        description="Train, serve and compare convolutional image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"stride {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("STRIDE_LOG_LEVEL", "WARNING"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (env STRIDE_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("stride: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, LookupError) as exc:
        # Bad input of any kind: one line, no traceback (STRIDE_DEBUG=1 shows it).
        if os.environ.get("STRIDE_DEBUG"):
            raise
        print(f"stride {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
