"""The `stride` command line: subcommands, listings, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data import DATASETS
from pipeline.layers import ACTIVATIONS
from pipeline.losses import LOSSES
from pipeline.optim import OPTIMIZERS
from stride.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_models_lists_every_registered_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for registry in (ACTIVATIONS, OPTIMIZERS, LOSSES, DATASETS):
        for name in registry.names():
            assert f"  {name} " in out


def test_models_summary_prints_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--summary", str(ROOT / "configs" / "digits.yaml")]) == 0
    out = capsys.readouterr().out
    assert "features.0.conv" in out and "32x8x8" in out and "total parameters: 45,418" in out


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stride.cli",
            "train",
            "--config",
            str(ROOT / "configs" / "digits.yaml"),
            "--runs",
            str(tmp_path),
            "--set",
            "model.blocks.0.padding=half",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "stride train: error: padding 'half' is not allowed; allowed: valid, same, full, "
        "or an integer >= 0"
    ]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_train_on_ray_then_export_from_the_command_line(
    ray_cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        "--runs",
        str(tmp_path),
        "--experiment",
        "cli",
        "--name",
        "r1",
        "--quiet",
        "--set",
        "training.epochs=2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"run: {tmp_path / 'cli' / 'r1'}" in out and "test accuracy:" in out
    assert (
        main(
            [
                "export",
                str(tmp_path / "cli" / "r1"),
                "--repository",
                str(tmp_path / "repo"),
                "--name",
                "digits",
            ]
        )
        == 0
    )
    assert (tmp_path / "repo" / "digits" / "1" / "model.onnx").is_file()
    assert main(args) == 2  # the run exists: refuse, do not overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2  # a completed run cannot be resumed
    assert "already completed" in capsys.readouterr().err


def test_train_refuses_a_run_the_cluster_cannot_place(
    ray_cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray would queue it forever (seen: `stride train --gpu` on a machine without a GPU
    waited until it was killed); the command says why and makes no run folder."""
    config = str(ROOT / "configs" / "digits.yaml")
    base = ["train", "--config", config, "--runs", str(tmp_path), "--quiet"]
    want_gpu = [*base, "--gpu"] if not ray_cluster.get("GPU") else [*base, "--workers", "64"]
    assert main(want_gpu) == 2
    err = capsys.readouterr().err
    assert "but the cluster has" in err and ("drop --gpu" in err or "scaling.workers" in err)
    cpus = ray_cluster["CPU"]
    assert main([*base, "--set", f"scaling.cpus_per_worker={cpus + 1:g}"]) == 2
    err = capsys.readouterr().err
    assert f"needs {cpus + 1:g} CPU but the cluster has {cpus:g} CPU" in err
    assert "scaling.cpus_per_worker" in err
    if not ray_cluster.get("GPU"):
        assert main([*base, "--gpu", "--local"]) == 2
        assert "no CUDA device; drop --gpu" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_local_training_and_resume_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "--local",
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        "--runs",
        str(tmp_path),
        "--experiment",
        "cli",
        "--name",
        "r1",
        "--quiet",
        "--set",
        "training.epochs=2",
    ]
    assert main(args) == 0
    (tmp_path / "cli" / "r1" / "summary.json").unlink()  # as if it had died
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "resuming" in captured.err and "test accuracy:" in captured.out


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        assert p.format_help(), name


@pytest.mark.parametrize("command", ["sweep", "demo", "train"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("seed: 0\noptimizer: {name: adam, momentum: 0.9}\n", "optimizer.momentum"),
    ],
)
def test_sweep_and_demo_config_errors_are_one_line_before_ray(
    command: str,
    content: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(content)
    started = ray.is_initialized()
    assert main([command, "--config", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stride {command}: error: "), err
    assert message in err[0]
    assert ray.is_initialized() == started  # refused before Ray was started
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]  # and left nothing


def test_a_refused_resume_from_the_command_line_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "configs" / "digits.yaml")
    assert main(["train", "--config", config, "--name", "nope", "--resume", "--quiet"]) == 2
    assert "no run at" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--search", "bayes"], "unknown searcher 'bayes'"),
        (["--scheduler", "pbt"], "unknown scheduler 'pbt'"),
        (["--space", "optimizer.lr=loguniform(1,0.1)"], "needs low < high"),
        (["--search", "optuna", "--grid", "optimizer.name=sgd,adam"], "cannot take the grid"),
        (["--scheduler", "asha", "--metric", "test_accuracy"], "not reported every epoch"),
        (["--samples", "-1", "--search", "random"], "--samples must be an integer >= 1"),
        (["--seeds", "0"], "--seeds must be an integer >= 1"),
        (["--resume", "nothing-here"], "holds no sweep to resume"),
    ],
)
def test_bad_sweep_flags_are_one_line_before_ray(
    flags: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    started = ray.is_initialized()
    config = [] if "--resume" in flags else ["--config", str(ROOT / "configs" / "digits.yaml")]
    assert main(["sweep", *config, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stride sweep: error: "), err
    assert message in err[0]
    assert ray.is_initialized() == started  # refused before Ray was started
    assert list(tmp_path.iterdir()) == []  # and left nothing


def test_a_sweep_with_a_trial_that_failed_outside_the_training_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Diverged trials are results (exit 0, listed); a crash makes the sweep incomplete
    (exit 1, saying which trial and why) unless --allow-failed-trials accepts that."""
    from pipeline.sweep_results import SweepRun
    from runstore import SummaryRecord
    from stride.commands.sweep import _exit_status
    from tests.pipeline.conftest import tiny_config

    def trial(
        run_id: str, state: str, reason: str | None = None, failure: str | None = None
    ) -> SweepRun:
        summary = SummaryRecord(status=state, reason=reason, failure=failure)
        return SweepRun(run_id, {}, 0, tiny_config(), run_id, state, summary=summary)

    diverged = "DivergenceError: epoch 1: validation loss is nan; the run diverged"
    good = [
        trial("a", "completed"),
        trial("b", "stopped"),
        trial("c", "failed", diverged, failure="diverged"),
    ]
    assert _exit_status(good, allow_failed=False) == 0
    assert "diverged (a result, counted by stride compare): c" in capsys.readouterr().err
    crashed = [*good, trial("d", "failed", "RuntimeError: worker lost", failure="error")]
    crashed[-1].error = "RuntimeError: worker lost"
    assert _exit_status(crashed, allow_failed=False) == 1
    err = capsys.readouterr().err
    assert "failed: d: RuntimeError: worker lost" in err
    assert "1 of 4 trials failed outside the training" in err and "exit 1" in err
    assert _exit_status(crashed, allow_failed=True) == 0
    assert "exit 0 (--allow-failed-trials)" in capsys.readouterr().err
