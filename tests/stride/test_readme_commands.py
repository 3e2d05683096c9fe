"""The README's commands, run the way a user runs them: the `stride` executable in a
fresh working directory, with the default paths (no --runs, no absolute paths), each
command starting its own local Ray instance.

Every other test passes absolute temporary paths; these are the ones that caught
`make demo` writing its runs into Ray's session folder (a relative `runs` reached the
Ray Train workers, which start in their own working directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRIDE = Path(sys.executable).with_name("stride")  # .venv/bin/stride, as the README writes it

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder with a copy of configs/digits.yaml and nothing else."""
    if not STRIDE.exists():
        pytest.skip(f"{STRIDE} is not installed (pip install -e .)")
    path = tmp_path_factory.mktemp("user")
    (path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "digits.yaml", path / "configs" / "digits.yaml")
    return path


def stride(workdir: Path, *args: str, timeout: float = 300) -> str:
    """`stride ARGS` in `workdir` with the user's environment minus Stride's and Ray's
    variables (so every default applies); returns stdout, fails with both streams."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIDE_", "RAY_")) and k != "PYTHONPATH"
    }
    proc = subprocess.run(
        [str(STRIDE), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"stride {' '.join(args)} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_train_writes_its_run_under_the_working_directory(workdir: Path) -> None:
    out = stride(workdir, "train", "--config", "configs/digits.yaml", "--set", "training.epochs=2")
    runs = sorted((workdir / "runs" / "default").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert f"run: {run}" in out
    assert summary(run)["status"] == "completed"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2]
    assert (run / "config.json").is_file() and (run / "checkpoints" / "model.pt").is_file()


def test_sweep_export_and_compare_with_relative_paths(workdir: Path) -> None:
    out = stride(
        workdir,
        "sweep",
        "--config",
        "configs/digits.yaml",
        "--grid",
        "optimizer.name=sgd,adam",
        "--seeds",
        "1",
        "--experiment",
        "opt",
        "--set",
        "training.epochs=2",
    )
    runs = sorted(
        p for p in (workdir / "runs" / "opt").iterdir() if p.is_dir() and p.name[0] != "."
    )
    assert [summary(r)["status"] for r in runs] == ["completed", "completed"], out
    assert "best run by val_accuracy" in out

    run_id = runs[0].name
    out = stride(workdir, "export", f"runs/opt/{run_id}", "--repository", "repository")
    assert "exported" in out
    assert sorted(p.name for p in (workdir / "repository").iterdir()) == ["digits-cnn"]
    assert (workdir / "repository" / "digits-cnn" / "1" / "model.onnx").is_file()

    out = stride(workdir, "compare", "opt")
    assert "sgd" in out and "adam" in out
