"""`stride demo` end to end, shortened: 5 optimizers x 1 seed x 2 epochs."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from stride.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_the_whole_pipeline_twice(
    ray_cluster: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As a user runs it: from a fresh folder, with the default (relative) paths.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRIDE_RUNS", raising=False)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits.yaml").write_bytes(
        (ROOT / "configs" / "digits.yaml").read_bytes()
    )
    args = [
        "demo",
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
    assert (tmp_path / "demo-comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    experiments = sorted(p.name for p in (tmp_path / "runs").iterdir())
    trials = [p for p in (tmp_path / "runs" / experiments[0]).iterdir() if p.name[0] != "."]
    assert len(experiments) == 1 and len([p for p in trials if p.is_dir()]) == 5
    assert (tmp_path / "runs" / experiments[0] / "sweep.json").is_file()
    # A second demo works on what the first left: a new experiment, a new model version.
    assert (tmp_path / "repository" / "digits-cnn" / "1" / "model.onnx").is_file()
    # With the default ports taken (REST's 8000, gRPC's 8001: another `stride serve`):
    # the demo's servers use free ones.
    with contextlib.ExitStack() as held:
        for port in (8000, 8001):
            taken = held.enter_context(socket.socket())
            with contextlib.suppress(OSError):  # taken already: the same condition
                taken.bind(("127.0.0.1", port))
                taken.listen()
        assert main(args) == 0
    assert "version 2" in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_the_demo_table_names_its_interval(tmp_path: Path) -> None:
    """The demo prints the analysis service's CompareRuns answer: each test accuracy and
    epochs to target with the interval the service names, and that name in the footer."""
    from runstore import RunStore
    from services.analysis.servicer import AnalysisServicer
    from services.generated.stride.analysis.v1 import analysis_pb2 as pb
    from stride.demo import format_comparison
    from tests.services.analysis.conftest import FakeContext
    from tests.services.analysis.runstore import write_known_store

    servicer = AnalysisServicer(RunStore(str(write_known_store(tmp_path))))
    request = pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt"), target=0.95)
    result = servicer.CompareRuns(request, FakeContext())
    text = format_comparison(result)
    adam = result.groups[0].epochs_to_target
    assert f"2.0 ±1.0 [{adam.ci_low:.1f}, {adam.ci_high:.1f}]" in text
    assert "[95% Student's t interval of the mean; none for one seed]" in text
    assert "counts its budget of epochs" in text
