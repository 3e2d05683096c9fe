"""stride course: every experiment behind docs/course.md, then its tables and figures.

The plan below is the course: which committed config (configs/course/) each claim is
tested with, the grid, the overrides and the seeds, all fixed before any run. Each
sweep goes through `stride sweep` and each figure through `stride compare`, by their
command lines (in this process, or `--subprocess` for the `stride` executable), so the
course depends on their flags, not on their internals. The claim tables are computed
from the run store (stride/commands/_course_tables.py) and written as Markdown for the
page to include, with a machine-readable summary.json beside them.

`--quick` is the reduced course the test suite runs: a subset, one seed, one epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stride.commands._paths import local_path, store_location

NAME = "course"
HELP = "run every experiment of docs/course.md (sweeps, comparisons, tables, figures)"
ORDER = 70
# the course is its committed configs: taken from the source tree, whatever the working directory
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "course"


@dataclass(frozen=True)
class Sweep:
    """One `stride sweep`: a config, its grid axes and overrides, into its own experiment
    folder (a sweep owns its experiment). `quick_grid` is the grid of the reduced
    course; a sweep without one is left out of it."""

    config: str
    part: str = ""  # the experiment folder is <experiment>-<part> ("" : <experiment>)
    grid: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    quick_grid: tuple[str, ...] | None = None
    max_concurrent: int = 2
    # `stride tune-optimizers` arguments instead of a grid: the sweep tunes each
    # optimizer's learning rate, then evaluates the tuned rates on fresh seeds in `folder`
    tune: tuple[str, ...] | None = None
    seeds: int | None = None  # its own number of seeds (None: the course's --seeds)


@dataclass(frozen=True)
class Experiment:
    """One claim of the course: its sweeps into one experiment and how to compare them."""

    name: str
    claim: str
    sweeps: tuple[Sweep, ...]
    by: str  # `stride compare --by`: the config keys that name a group
    table: str  # the function of _course_tables that writes the claim's table

    def folder(self, sweep: Sweep) -> str:
        """The run store experiment one of its sweeps writes."""
        return f"{self.name}-{sweep.part}" if sweep.part else self.name

    def sweeps_in(self, quick: bool) -> tuple[Sweep, ...]:
        return tuple(s for s in self.sweeps if not quick or s.quick_grid is not None)

    target: float = 0.9  # validation accuracy a run must reach (epochs to target)
    rank_by: str = "final_val_accuracy"


PLAN: tuple[Experiment, ...] = (
    Experiment(
        "vanishing",
        "Sigmoid makes gradients vanish in deep nets; ReLU solves it; batch norm rescues sigmoid",
        (
            # the activation crossed with both textbook initialisers: is it the activation?
            Sweep(
                "deep.yaml",
                "init",
                grid=("model.activation.name=sigmoid,relu", "model.init=xavier_normal,he_normal"),
            ),
            # the framework default initialiser (what the first version of the page used)
            Sweep(
                "deep.yaml",
                "default-init",
                sets=("model.init=default",),
                grid=("model.activation.name=sigmoid,relu",),
            ),
            # the sigmoid network with batch norm after every convolution
            Sweep(
                "deep-bn.yaml",
                "bn",
                sets=("model.activation.name=sigmoid", "model.init=xavier_normal"),
            ),
        ),
        by="model.name,model.activation.name,model.init",
        table="vanishing",
    ),
    Experiment(
        "tanh-sigmoid",
        "Tanh learns faster than sigmoid",
        (Sweep("tanh-sigmoid.yaml", grid=("model.activation.name=sigmoid,tanh",)),),
        by="model.activation.name",
        table="epochs_to_target",
    ),
    Experiment(
        "dying-relu",
        "ReLU has dying neurons; Leaky ReLU (max(0.1x, x)) addresses them",
        (
            Sweep(
                "dying-relu.yaml",
                grid=("model.activation.name=relu,leaky_relu", "optimizer.lr=0.05,0.2,0.5"),
                quick_grid=("model.activation.name=relu,leaky_relu", "optimizer.lr=0.05"),
            ),
        ),
        by="model.activation.name,optimizer.lr",
        table="dead_units",
    ),
    Experiment(
        "activation-cost",
        "ELU adds an exponential (cost); Maxout computes two pieces (cost)",
        (
            Sweep(
                "activation-cost.yaml",
                "same-layers",
                grid=("model.activation.name=relu,leaky_relu,elu,maxout",),
                max_concurrent=1,
            ),
            Sweep("activation-cost-maxout-wide.yaml", "maxout-wide", max_concurrent=1),
        ),
        by="model.name,model.activation.name",
        table="cost",
    ),
    Experiment(
        "dropout-weight-decay",
        "Dropout is the representative fix, similar to L2 regularisation",
        (
            Sweep("dropout-weight-decay.yaml", "dropout", grid=("model.head.dropout=0.0,0.5",)),
            Sweep(
                "dropout-weight-decay.yaml",
                "weight-decay",
                grid=("optimizer.weight_decay=0.001,0.01",),
            ),
        ),
        by="model.head.dropout,optimizer.weight_decay",
        table="regularisation",
        rank_by="test_accuracy",
    ),
    Experiment(
        "generalisation",
        "Batch norm, early stopping and augmentation help",
        (
            Sweep("regularisation.yaml", "plain", sets=("model.name=plain",)),
            Sweep("regularisation-bn.yaml", "batchnorm", sets=("model.name=batchnorm",)),
            Sweep(
                "regularisation.yaml",
                "early-stopping",
                sets=(
                    "model.name=early-stopping",
                    "early_stopping.enabled=true",
                    "early_stopping.patience=3",
                ),
            ),
            Sweep(
                "regularisation.yaml",
                "augment",
                sets=(
                    "model.name=augment",
                    "data.augment.crop_padding=1",
                    "data.augment.rotation=10",
                ),
            ),
        ),
        by="model.name",
        table="regularisation",
        rank_by="test_accuracy",
    ),
    Experiment(
        "optimizers",
        "Momentum, AdaGrad, RMSProp, Adam are faster than SGD (default learning rates)",
        (Sweep("optimizers.yaml", grid=("optimizer.name=sgd,momentum,adagrad,rmsprop,adam",)),),
        by="optimizer.name",
        table="epochs_to_target",
        target=0.95,
    ),
    Experiment(
        "optimizers-tuned",
        "The same optimizers, each at the learning rate a search chose on the same budget, "
        "evaluated on fresh seeds",
        (
            # DeepOBS' protocol: the same 9 log-spaced rates for every optimizer, scored
            # on seed 1, the chosen rates evaluated on 5 fresh seeds (2-6)
            Sweep(
                "optimizers.yaml",
                tune=(
                    "--optimizers=sgd,momentum,adagrad,rmsprop,adam",
                    "--lr-range=1e-4,1",
                    "--trials=9",
                    "--search=grid",
                    "--tuning-seeds=1",
                    "--no-default-rates",  # the default rates are experiment `optimizers`
                ),
                seeds=5,
            ),
        ),
        by="optimizer.name,optimizer.lr",
        table="epochs_to_target",
        target=0.95,
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=store_location,
        default="runs/course",
        help="run store for the course's runs (default runs/course)",
    )
    parser.add_argument(
        "--out",
        type=local_path,
        default=Path("docs/_course"),
        help="folder for the tables (Markdown) and summary.json (default docs/_course)",
    )
    parser.add_argument(
        "--img",
        type=local_path,
        default=Path("docs/img"),
        help="folder for the figures, course-<experiment>.png (default docs/img)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="EXPERIMENT",
        help="run only this experiment (repeatable); tables are written for these only",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the reduced course: a subset of the sweeps, one seed, one epoch",
    )
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: write the tables and figures from the runs already in --runs",
    )
    parser.add_argument(
        "--subprocess",
        action="store_true",
        help="run each sweep and comparison as its own `stride` process (a fresh Ray each)",
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (passed to sweep)")


@dataclass
class Step:
    """One command the course ran, and how it went."""

    argv: list[str]
    rc: int = 0
    seconds: float = 0.0
    output: str = field(default="", repr=False)


def run(args: argparse.Namespace) -> int:
    from pipeline.conv_example import format_markdown, worked_example
    from stride.commands import _course_tables as tables

    plan = _selected(args.only)
    seeds = 1 if args.quick else args.seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.img.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "seeds": seeds,
        "runs": _shown(args.runs.uri),
        "experiments": [],
    }
    started = time.perf_counter()
    failed: list[str] = []  # every step of this invocation that failed, said at the end
    for exp in plan:
        sweeps = exp.sweeps_in(args.quick)
        if not sweeps:
            continue  # the quick course leaves this claim out
        entry: dict[str, Any] = {"name": exp.name, "claim": exp.claim, "sweeps": []}
        for sweep in sweeps:
            folder = exp.folder(sweep)
            if not args.tables_only:
                step = _stride(_sweep_argv(folder, sweep, args, seeds), args.subprocess)
                entry["sweeps"].append(_step_json(step))
                _log(f"{folder}: sweep exit {step.rc} ({step.seconds:.0f} s)")
                if step.rc:
                    failed.append(f"stride {step.argv[0]} {folder} (exit {step.rc})")
            comparison = _compare(exp, folder, args)
            entry.setdefault("comparisons", []).append(comparison)
            if comparison["rc"]:
                failed.append(f"stride compare {folder} (exit {comparison['rc']})")
        folders = [exp.folder(s) for s in sweeps]
        try:
            table = tables.write_table(exp.table, args.runs, folders, exp.by, exp.target)
        except Exception as exc:  # one failed table does not end the course; it is said
            failed.append(f"the {exp.name} table: {type(exc).__name__}: {exc}")
            table = tables.Table(f"(the table failed: {type(exc).__name__}: {exc})\n", {})
        path = args.out / f"{exp.name}.md"
        path.write_text(table.markdown)
        entry.update(experiments=folders, table=_shown(str(path)), numbers=table.numbers)
        summary["experiments"].append(entry)
    example = worked_example()
    (args.out / "convolution.md").write_text(format_markdown(example))
    summary["convolution"] = {
        "table": _shown(str(args.out / "convolution.md")),
        "flip_matches_definition": example.flip_matches,
        "unflipped_differs": example.unflipped_differs,
    }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if args.only or args.tables_only:  # what an earlier run recorded stays
        summary = _merged(args.out / "summary.json", summary, keep_sweeps=args.tables_only)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    done = len(summary["experiments"])
    print(f"course: {done} experiments in {summary['seconds']} s; tables in {args.out}")
    for what in failed:
        print(f"course: failed: {what}", file=sys.stderr)
    if failed:
        print(
            f"course: {len(failed)} failed step{'s' if len(failed) > 1 else ''}; the tables "
            "of their claims are incomplete",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _merged(path: Path, summary: dict[str, Any], keep_sweeps: bool = False) -> dict[str, Any]:
    """`summary` over the summary.json of an earlier run of the same mode: experiments
    run now replace theirs, the others are kept, in the plan's order; `keep_sweeps`
    (tables only, nothing ran) keeps the earlier sweeps' commands and seconds."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return summary
    if not isinstance(earlier, dict) or earlier.get("mode") != summary["mode"]:
        return summary
    entries = {e["name"]: e for e in earlier.get("experiments", []) if isinstance(e, dict)}
    for entry in summary["experiments"]:
        if keep_sweeps and entry["name"] in entries:
            entry["sweeps"] = entries[entry["name"]].get("sweeps", [])
        entries[entry["name"]] = entry
    order = [e.name for e in PLAN]
    merged = sorted(
        entries.values(), key=lambda e: order.index(e["name"]) if e["name"] in order else len(order)
    )
    seconds = sum(s.get("seconds", 0) for e in merged for s in e.get("sweeps", []))
    return {**summary, "experiments": merged, "seconds": round(seconds, 1), "merged": True}


def _selected(only: list[str]) -> list[Experiment]:
    names = [e.name for e in PLAN]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"--only {unknown[0]!r}: unknown experiment; valid: {', '.join(names)}")
    return [e for e in PLAN if not only or e.name in only]


def _sweep_argv(folder: str, sweep: Sweep, args: argparse.Namespace, seeds: int) -> list[str]:
    """`stride sweep` (or `stride tune-optimizers`) arguments for one sweep (the quick
    course: its quick grid, 1 epoch)."""
    grid = sweep.grid
    sets = list(sweep.sets)
    if args.quick:
        grid = sweep.quick_grid or ()
        sets.append("training.epochs=1")
    command = "sweep" if sweep.tune is None else "tune-optimizers"
    argv = [command, "--config", str(CONFIGS / sweep.config), "--runs", args.runs.uri]
    argv += ["--experiment", folder, "--seeds", str(sweep.seeds or seeds)]
    argv += ["--max-concurrent", str(sweep.max_concurrent), *(sweep.tune or ())]
    for axis in grid:
        argv += ["--grid", axis]
    for item in sets:
        argv += ["--set", item]
    if args.address:
        argv += ["--address", args.address]
    return argv


def _compare(exp: Experiment, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    """`stride compare --json --plot` of one sweep's experiment: its JSON next to the
    tables, its figure in --img as course-<folder>.png."""
    plot = args.img / f"course-{folder}.png"
    argv = ["compare", folder, "--runs", args.runs.uri, "--by", exp.by]
    argv += ["--target", str(exp.target), "--rank-by", exp.rank_by, "--plot", str(plot), "--json"]
    step = _stride(argv, args.subprocess)
    result: dict[str, Any] = {"experiment": folder, **_step_json(step)}
    if step.rc != 0:
        _log(f"{folder}: compare exit {step.rc}")
        return result
    path = args.out / f"{folder}.compare.json"
    start = step.output.find("{")  # compare prints only its JSON with --json
    path.write_text(step.output[start:] if start >= 0 else step.output)
    return {**result, "json": _shown(str(path)), "figure": _shown(str(plot))}


def _stride(argv: list[str], in_subprocess: bool) -> Step:
    """Run one stride command line; its stdout is kept, its exit status returned."""
    t0 = time.perf_counter()
    if in_subprocess:
        done = subprocess.run(
            [sys.executable, "-m", "stride.cli", *argv],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        rc, output = done.returncode, done.stdout
    else:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                rc = _run_command(argv)
            except SystemExit as exc:  # argparse refusing a flag
                rc = exc.code if isinstance(exc.code, int) else 2
            except Exception as exc:  # one failed step does not end the course
                print(f"stride {argv[0]}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
                rc = 1
        output = buffer.getvalue()
    return Step(argv, rc, round(time.perf_counter() - t0, 1), output)


def _run_command(argv: list[str]) -> int:
    """`stride ARGV` in this process, through the command module's own parser and `run`
    (the contract stride.cli relies on), so Ray started by one sweep serves the next."""
    module = importlib.import_module(f"stride.commands.{argv[0].replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"stride {argv[0]}")
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.command = argv[0]
    return int(module.run(args) or 0)


def _step_json(step: Step) -> dict[str, Any]:
    return {"argv": [_shown(a) for a in step.argv], "rc": step.rc, "seconds": step.seconds}


def _shown(text: str) -> str:
    """`text` for summary.json: an absolute path inside the working directory becomes
    relative to it. Commands get the absolute form (Ray workers start elsewhere); the
    summary is committed beside the docs, where a path of one machine means nothing."""
    if "://" in text or not os.path.isabs(text):
        return text
    relative = os.path.relpath(text)
    return text if relative == ".." or relative.startswith(".." + os.sep) else relative


def _log(message: str) -> None:
    print(f"[course] {message}", file=sys.stderr, flush=True)
