"""stride models: what can be named in a config, one line each."""

from __future__ import annotations

import argparse

from tabulate import tabulate

NAME = "models"
HELP = (
    "list activations, initialisers, optimizers, losses and data sets "
    "(or --summary CONFIG: layer table)"
)
ORDER = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--summary",
        metavar="CONFIG",
        help="print each layer's output shape and parameter count for a config",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key before --summary (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.data import DATASETS, describe
    from pipeline.initialisers import INITIALISERS
    from pipeline.layers import ACTIVATIONS
    from pipeline.losses import LOSSES
    from pipeline.optim import list_optimizers
    from pipeline.spec import format_plan, validate

    if args.summary:
        cfg = load_config(args.summary, args.overrides)
        print(format_plan(validate(cfg), describe(cfg.data).input_shape))
        return 0
    sections = [
        ("activations", [(e.name, e.description) for e in ACTIVATIONS]),
        (
            "initialisers (model.init)",
            [(e.name, f"{e.value.formula}; {e.description}") for e in INITIALISERS],
        ),
        (
            "optimizers",
            [(o.name, f"{o.description} ({_defaults(o.name)})") for o in list_optimizers()],
        ),
        ("losses", [(e.name, e.description) for e in LOSSES]),
        ("data sets", [(e.name, e.description) for e in DATASETS]),
        (
            "padding",
            [
                ("valid", "no padding"),
                ("same", "k-1 in all: keeps H, W at stride 1"),
                ("full", "k-1 on each side"),
                ("<int>", "that many pixels on each side"),
            ],
        ),
        ("pooling", [("max", "maximum over the window"), ("mean", "average over the window")]),
        (
            "schedules",
            [
                ("none", "constant"),
                ("step", "times gamma every step_size epochs"),
                ("cosine", "cosine decay to min_lr_factor"),
                ("warmup_epochs", "linear warm-up, combines with any"),
            ],
        ),
    ]
    # One table for all sections, so that the descriptions line up across them.
    table = tabulate(
        [row for _, rows in sections for row in rows], tablefmt="plain", disable_numparse=True
    )
    lines = iter(table.split("\n"))
    for title, rows in sections:
        print(f"{title}:")
        for _ in rows:
            print(f"  {next(lines)}")
    return 0


def _defaults(name: str) -> str:
    """The arguments an optimizer gets when the config sets none (no weight decay of 0)."""
    from pipeline.config import OptimizerSpec
    from pipeline.optim import optimizer_kwargs

    kwargs = optimizer_kwargs(OptimizerSpec(name=name))
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if not (k == "weight_decay" and v == 0))
