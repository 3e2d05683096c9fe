"""The train loop: early stopping, the run directory's files and fields, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.config import EarlyStoppingSpec
from pipeline.layers import Conv2d
from pipeline.model import CNN
from pipeline.run import train_local
from pipeline.train import DivergenceError, EarlyStopping
from runstore import EpochRecord, RunDir, check_name, diverged
from tests.pipeline.conftest import tiny_config
from tests.pipeline.typed import layer, not_none


def test_early_stopping_counts_patience_and_min_delta() -> None:
    stop = EarlyStopping(EarlyStoppingSpec(metric="val_loss", patience=2, min_delta=0.01))
    assert stop.update(1, 1.0) and not stop.should_stop
    assert stop.update(2, 0.9)
    assert not stop.update(3, 0.895)  # less than min_delta better: not an improvement
    assert not stop.should_stop
    assert not stop.update(4, 0.95)
    assert stop.should_stop and stop.best_epoch == 2
    acc = EarlyStopping(EarlyStoppingSpec(metric="val_accuracy", patience=1))
    assert acc.update(1, 0.5) and acc.update(2, 0.6) and not acc.update(3, 0.55)
    assert acc.should_stop and acc.best_value == 0.6


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path: Path) -> None:
    # Only a drop of validation loss by 0.3 counts, so training keeps improving a little
    # after the best epoch without "improving": it stops after patience epochs.
    cfg = tiny_config(
        **{
            "training.epochs": 30,
            "early_stopping.enabled": True,
            "early_stopping.patience": 2,
            "early_stopping.min_delta": 0.3,
        }
    )
    run, summary = train_local(cfg, runs=tmp_path, experiment="es", name="r1")
    metrics = run.read_metrics()
    assert summary.stopped_early
    assert summary.epochs_run is not None and summary.epochs_run < 30
    assert len(metrics) == summary.epochs_run
    best_epoch = not_none(summary.best_epoch)
    best = max((r for r in metrics if r.epoch <= best_epoch), key=lambda r: r.epoch)
    assert summary.best_value == best.val_loss
    after = [not_none(r.val_loss) for r in metrics if r.epoch > best.epoch]
    best_loss = not_none(best.val_loss)
    assert all(v > best_loss - 0.3 for v in after)
    assert summary.epochs_run == best.epoch + 2  # patience 2
    # The saved final model is the best epoch's, not the last epoch's.
    final = torch.load(run.checkpoints / "model.pt", weights_only=True)
    last = torch.load(run.checkpoints / "last.pt", weights_only=True)
    assert torch.equal(final["head.fc.weight"], last["best_model"]["head.fc.weight"])
    assert not torch.equal(final["head.fc.weight"], last["model"]["head.fc.weight"])


def test_run_directory_files_and_fields(tmp_path: Path) -> None:
    run, summary = train_local(tiny_config(), runs=tmp_path, experiment="exp", name="run-a")
    assert run.path == tmp_path / "exp" / "run-a"
    config = json.loads((run.path / "config.json").read_text())
    assert {
        "schema",
        "experiment",
        "run_id",
        "created_at",
        "config",
        "config_hash",
        "grid",
        "code_version",
        "versions",
        "effective",
        "data",
    } <= set(config)
    assert config["config"]["optimizer"]["name"] == "adam" and config["versions"]["torch"]
    assert config["data"]["input_shape"] == [1, 8, 8] and len(config["data"]["mean"]) == 1
    assert config["effective"]["optimizer"]["lr"] == 0.01  # what it was built with
    assert run.read_config().config == config["config"]  # the typed record reads it back
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "grad_norms",
            "epoch_seconds",
            "elapsed_seconds",
            "images_per_second",
        } <= set(r)
        assert [g["layer"] for g in r["grad_norms"]] == [
            "features.0.conv",
            "features.0.bn",
            "head.fc0",
            "head.fc",
        ]
        assert all(g["norm"] > 0 for g in r["grad_norms"])
        assert 0 <= r["val_accuracy"] <= 1
    assert records[-1]["elapsed_seconds"] >= records[0]["elapsed_seconds"]
    for r in records:  # dead units per activation layer, the weight norm (docs/formats.md)
        assert [d["layer"] for d in r["dead_units"]] == ["features.0.act", "head.act0"]
        assert all(0 <= d["fraction"] <= 1 for d in r["dead_units"])
        assert r["weight_norm"] > 0
    assert [x["name"] for x in config["layers"] if x["kind"] in ("conv", "linear")] == [
        "features.0.conv",
        "head.fc0",
        "head.fc",
    ]
    assert config["layers"][0] == {"name": "features.0.conv", "kind": "conv", "params": 80}
    assert config["config"]["model"]["init"] == "default"
    assert run.read_config().layers == tuple(config["layers"])
    assert [r.epoch for r in run.read_metrics()] == [1, 2, 3, 4]
    stored = json.loads((run.path / "summary.json").read_text())
    assert stored == dataclasses.asdict(summary) and run.read_summary() == summary
    assert stored["status"] == "completed" and stored["device"] == "cpu"
    assert stored["schema"] == 2 and 0 < stored["val_accuracy"] <= 1
    assert stored["failure"] is None
    assert stored["test_accuracy"] > 0.8  # 4 epochs of a tiny CNN on the digits
    assert (run.checkpoints / "last.pt").is_file() and (run.checkpoints / "model.pt").is_file()
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        train_local(tiny_config(), runs=tmp_path, experiment="exp", name="run-a")


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def stop_after_two(record: EpochRecord) -> None:
        if record.epoch == 2:
            raise Stop

    cfg = tiny_config(**{"training.epochs": 5})
    with pytest.raises(Stop):
        train_local(cfg, runs=tmp_path, experiment="e", name="r", on_epoch=stop_after_two)
    run = RunDir(tmp_path / "e" / "r")
    failed = run.read_summary()
    assert failed is not None and failed.status == "failed"
    (run.path / "summary.json").unlink()  # as if the whole job died
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a crash mid-line
    seen: list[int] = []
    run2, summary = train_local(
        cfg,
        runs=tmp_path,
        experiment="e",
        name="r",
        resume=True,
        on_epoch=lambda r: seen.append(r.epoch),
    )
    assert seen == [3, 4, 5]
    assert [r.epoch for r in run2.read_metrics()] == [1, 2, 3, 4, 5]
    assert summary.status == "completed" and summary.epochs_run == 5
    with pytest.raises(ValueError, match="already completed"):
        train_local(cfg, runs=tmp_path, experiment="e", name="r", resume=True)


def test_diverging_run_is_marked_failed(tmp_path: Path) -> None:
    """The loop writes the divergence as a fact (`failure: "diverged"`), with what the
    run did before it; a reader needs no phrase of the reason."""
    cfg = tiny_config(**{"optimizer.name": "sgd", "optimizer.lr": 1e6, "training.epochs": 3})
    with pytest.raises(FloatingPointError, match="diverged"):
        train_local(cfg, runs=tmp_path, experiment="e", name="boom")
    run = RunDir(tmp_path / "e" / "boom")
    stored = json.loads((run.path / "summary.json").read_text())
    assert stored["schema"] == 2 and stored["status"] == "failed"
    assert stored["failure"] == "diverged"
    summary = not_none(run.read_summary())
    assert summary.failure == "diverged" and diverged(summary)
    assert summary.reason is not None and "validation loss is nan" in summary.reason
    assert summary.epochs_run == len(run.read_metrics())  # the finite epochs it wrote
    assert summary.workers == 1 and summary.device == "cpu" and summary.test_accuracy is None


def test_the_divergence_error_survives_pickling() -> None:
    """Ray pickles a worker's exception to the driver; one that cannot be rebuilt from
    its args arrives as a TypeError instead."""
    error = pickle.loads(pickle.dumps(DivergenceError(3, math.nan)))
    assert isinstance(error, FloatingPointError)  # what callers catch
    assert isinstance(error, DivergenceError) and error.epoch == 3
    assert str(error) == "epoch 3: validation loss is nan; the run diverged"


def test_a_run_that_errors_is_marked_failed_by_an_error(tmp_path: Path) -> None:
    cfg = tiny_config(**{"training.epochs": 2})

    def crash(record: object) -> None:
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        train_local(cfg, runs=tmp_path, experiment="e", name="crash", on_epoch=crash)
    summary = not_none(RunDir(tmp_path / "e" / "crash").read_summary())
    assert summary.status == "failed" and summary.failure == "error"
    assert summary.reason == "RuntimeError: the disk went away" and not diverged(summary)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200, "a b"])
def test_names_cannot_escape_the_store(bad: str) -> None:
    with pytest.raises(ValueError, match="is not allowed"):
        check_name("run id", bad)


def test_run_store_is_a_path_or_a_uri(tmp_path: Path) -> None:
    run = RunDir.create(f"file://{tmp_path}", "e", "r")
    assert run.path == tmp_path / "e" / "r" and run.checkpoints.is_dir()
    assert (run.name, run.experiment, str(run)) == ("r", "e", str(tmp_path / "e" / "r"))
    with pytest.raises(ValueError, match=r"ftp:// is not a file system pyarrow can open"):
        RunDir.create("ftp://user:secret@host/runs", "e", "r")
    with pytest.raises(ValueError) as error:
        RunDir.create("ftp://user:secret@host/runs", "e", "r")
    assert "secret" not in str(error.value)  # credentials never reach a message


def test_dead_units_and_weight_norm_on_the_fixed_batch(tmp_path: Path) -> None:
    """probe_units against a hand count: a ReLU unit is dead when its input is <= 0 at
    every position of every probe image; the weight norm is that of conv and dense weights."""
    from pipeline.train import LocalContext, Trainer

    cfg = tiny_config(**{"training.epochs": 1})
    trainer = Trainer(cfg, LocalContext(), None)
    model = trainer.raw_model
    assert isinstance(model, CNN)
    conv = layer(model.features[0].conv, Conv2d)
    assert conv.bias is not None
    with torch.no_grad():  # kill 3 of the 8 channels: a large negative bias
        conv.bias[:3] = -1e3
    model.train()
    dead, norm = trainer.probe_units()
    assert model.training  # the probe leaves the mode as it found it
    assert dict(dead)["features.0.act"] == pytest.approx(3 / 8)
    inputs: dict[str, torch.Tensor] = {}
    act0 = layer(model.head.act0, nn.Module)
    handle = act0.register_forward_pre_hook(lambda m, i: inputs.setdefault("x", i[0]))
    model.eval()
    with torch.no_grad():
        model(trainer.probe)
    handle.remove()
    want = (inputs["x"] <= 0).all(dim=0).float().mean().item()
    assert dict(dead)["head.act0"] == pytest.approx(want)
    weights = [
        conv.weight,
        layer(model.head.fc0, nn.Linear).weight,
        layer(model.head.fc, nn.Linear).weight,
    ]
    squares = sum((w**2).sum() for w in weights)  # a Tensor: weights is not empty
    assert isinstance(squares, torch.Tensor)
    assert norm == pytest.approx(torch.sqrt(squares).item(), rel=1e-5)
    assert trainer.probe.shape[0] == min(256, trainer.sizes["val"])
