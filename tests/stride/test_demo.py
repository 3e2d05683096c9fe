"""`stride demo` end to end, shortened: 5 optimizers x 1 seed x 2 epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stride.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_the_whole_pipeline_twice(
    ray_cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "demo",
        "--config",
        str(ROOT / "configs" / "digits.yaml"),
        "--runs",
        str(tmp_path / "runs"),
        "--repository",
        str(tmp_path / "repo"),
        "--picture",
        str(tmp_path / "cmp.png"),
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--images",
        "4",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    for step in (
        "[demo 1/6]",
        "[demo 2/6] exported",
        "[demo 4/6]",
        "[demo 5/6]",
        "[demo 6/6] servers stopped cleanly",
    ):
        assert step in out, step
    assert out.count("test image ") == 4
    for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam"):
        assert f" {name} " in out  # a row of the comparison table
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    experiments = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(experiments) == 1 and len(list((tmp_path / "runs" / experiments[0]).iterdir())) == 5
    # A second demo works on what the first left: a new experiment, a new model version.
    assert main(args) == 0
    assert "version 2" in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 2
