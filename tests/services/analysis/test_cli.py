"""`stride compare` and `stride serve-analysis` options, in-process through stride.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.analysis import compare as cmp
from stride.cli import main
from stride.commands import compare as compare_command
from stride.commands import serve_analysis
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import run_id


def test_compare_prints_the_table(known_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "opt", "--runs", str(known_store)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    adam = next(line for line in lines if line.startswith("1     adam"))
    assert "2.00 ±1.00" in adam and "3/3" in adam
    sgd = next(line for line in lines if line.startswith("2     sgd"))
    assert "1/3" in sgd
    assert "0.83 p3" in out  # P(adam beats sgd), paired by seed
    assert "features.0.conv 0.01" in out


def test_compare_json_and_plot(
    known_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "out" / "cmp.png"
    args = [
        "compare",
        "opt",
        "--runs",
        known_store.as_uri(),
        "--json",
        "--plot",
        str(plot),
        "--width",
        "500",
        "--height",
        "400",
        "--target",
        "0.5",
    ]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    comparison = data["comparison"]
    assert comparison["target"] == 0.5 and comparison["interval"] == "student_t"
    assert comparison["ranking"] == ["adam", "sgd"]
    adam = comparison["groups"][0]
    assert adam["epochs_to_target"]["mean"] == 1.0 and adam["epochs_to_target"]["std"] == 0.0
    assert [g["name"] for g in data["gradient_flow"]] == ["adam", "sgd"]
    assert png_size(plot.read_bytes()) == (500, 400)


def test_compare_explicit_groups(known_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = f"mine={run_id('adam', 1)},{run_id('sgd', 2)}"
    assert main(["compare", "opt", "--runs", str(known_store), "--group", group, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["comparison"]["ranking"] == ["mine"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "experiment 'nope' not found"),
        (["opt", "--by", "optimiser.name"], "has config key 'optimiser.name'"),
        (["opt", "--group", "broken"], "is not NAME=RUN_ID"),
        (["opt", "--where", "seed"], "is not KEY=VALUE"),
        (["opt", "--target", "2"], "not in (0, 1]"),
    ],
)
def test_compare_errors_are_one_line(
    known_store: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["compare", *args, "--runs", str(known_store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stride compare: error: ") and message in err
    assert err.count("\n") == 1


def test_command_defaults_match_the_service() -> None:
    assert tuple(cmp.RANK_METRICS) == compare_command.RANK_METRICS
    assert compare_command.DEFAULT_RANK_BY == cmp.DEFAULT_RANK_BY
    assert compare_command.DEFAULT_GROUP_BY == cmp.DEFAULT_GROUP_BY


def test_serve_options_from_flags_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    token = tmp_path / "token"
    token.write_text("abc\n")
    for name, value in {
        "STRIDE_RUNS": "s3://bucket/runs",
        "STRIDE_PORT": "9100",
        "STRIDE_HEALTH_PORT": "9101",
        "STRIDE_AUTH_TOKEN_FILE": str(token),
        "STRIDE_GRACE_PERIOD": "2.5",
    }.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    serve_analysis.add_arguments(parser)
    args = parser.parse_args([])
    options = serve_analysis.server_options(args)
    assert (args.runs.uri, options.port, options.health_port) == ("s3://bucket/runs", 9100, 9101)
    assert (options.auth_token, options.grace_period, options.tls) == ("abc", 2.5, None)
    pem = {name: tmp_path / name for name in ("c.pem", "k.pem", "ca.pem")}
    for path in pem.values():
        path.write_text("-----BEGIN PLACEHOLDER-----\n")  # read now, parsed by grpc at start
    flags = ["--tls-cert", str(pem["c.pem"]), "--tls-key", str(pem["k.pem"])]
    args = parser.parse_args(["--port", "7000", *flags, "--tls-ca", str(pem["ca.pem"])])
    options = serve_analysis.server_options(args)
    assert options.port == 7000 and options.tls is not None
    assert options.tls.ca == pem["ca.pem"]
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(OSError, match=r"missing\.pem"):
        serve_analysis.server_options(parser.parse_args([*flags, "--tls-ca", missing]))
    with pytest.raises(ValueError, match="go together"):
        serve_analysis.server_options(parser.parse_args(["--tls-cert", "c.pem"]))
    token.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        serve_analysis.server_options(parser.parse_args([]))


def test_compare_analysis_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.services.analysis.test_analyses import lr_store, profile_store

    lr_store(tmp_path)
    profile_store(tmp_path)
    plot = tmp_path / "all.png"
    args = ["compare", "lr", "--runs", str(tmp_path)]
    extra = ["--sensitivity", "--expected-best", "--k", "2", "--win-metric", "final_val_accuracy"]
    assert main([*args, *extra, "--plot", str(plot), "--width", "600", "--height", "700"]) == 0
    out = capsys.readouterr().out
    assert "learning-rate sensitivity: final_val_accuracy against optimizer.lr" in out
    assert "expected best best_val_accuracy after k trials" in out
    assert (
        "P(row beats column) on final_val_accuracy (all pairs" in out
    )  # seeds repeat across rates
    assert png_size(plot.read_bytes()) == (600, 700)
    profile = ["compare", "w1", "--runs", str(tmp_path), "--profile", "--workload", "w2=0.9"]
    assert main([*profile, "--target", "0.9", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["profile"]
    assert [c["group"] for c in data["curves"]] == ["a", "c", "b"]
    assert data["workloads"][0]["groups"][2]["ratio"] is None  # infinite: never reached


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["w1", "--sensitivity"], "no learning-rate axis"),
        (["w1", "--expected-best", "--k", "5"], "k 5 is larger than the 1 trials"),
        (["w1", "--workload", "w2"], "--workload goes with --profile"),
        (["w1", "--profile", "--workload", "w2=x"], "target 'x' is not a number"),
        (["w1", "--profile", "--profile-metric", "val_loss"], "has no val_loss target"),
    ],
)
def test_compare_analysis_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from tests.services.analysis.test_analyses import profile_store

    profile_store(tmp_path)
    assert main(["compare", *args, "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stride compare: error: ") and message in err
    assert err.count("\n") == 1
