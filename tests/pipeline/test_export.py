"""ONNX export: every activation, padding mode and pooling kind; the repository layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline import export as export_mod
from pipeline.config import parse_config
from pipeline.export import ExportError, export_model, export_run, read_metadata
from pipeline.layers import ACTIVATIONS
from pipeline.model import build_model
from pipeline.run import train_local
from tests.pipeline.conftest import tiny_config

PROVENANCE = {"run_id": "r1", "experiment": "e", "config_hash": "abc", "code_version": "0"}


def _every_layer_model(activation: str) -> torch.nn.Module:
    """One model with every padding mode, an even kernel, both pool kinds and a dense head."""
    act = {"name": activation, "pieces": 2}
    cfg = parse_config(
        {
            "model": {
                "activation": act,
                "blocks": [
                    {
                        "type": "conv",
                        "channels": 4,
                        "kernel": 3,
                        "padding": "full",
                        "batch_norm": True,
                    },
                    {"type": "conv", "channels": 4, "kernel": 2, "padding": "same"},
                    {"type": "pool", "kind": "max", "size": 2},
                    {"type": "conv", "channels": 4, "kernel": 3, "padding": "valid", "stride": 1},
                    {"type": "conv", "channels": 4, "kernel": 3, "padding": 1, "stride": 2},
                    {"type": "pool", "kind": "mean", "size": 2, "stride": 1},
                ],
                "head": {"hidden": [8], "batch_norm": True, "dropout": 0.1},
            }
        }
    )
    model = build_model(cfg.model, input_shape=(1, 12, 12), num_classes=5)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation_exports_with_parity(activation: str, tmp_path: Path) -> None:
    model = _every_layer_model(activation)
    result = export_model(
        model,
        repository=tmp_path,
        name=f"m-{activation}",
        input_shape=(1, 12, 12),
        labels=list("abcde"),
        mean=[0.5],
        std=[0.25],
        provenance=PROVENANCE,
    )
    assert result.version == 1 and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(9, 1, 12, 12)).astype(np.float32)
    logits, probs = session.run(["logits", "probabilities"], {"input": x})
    with torch.no_grad():
        want = torch.softmax(model.eval()(torch.from_numpy(x)), 1).numpy()
    assert np.abs(probs - want).max() < 1e-4
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert logits.shape == (9, 5)


def test_repository_layout_metadata_and_versions(tmp_path: Path) -> None:
    model = _every_layer_model("relu")
    kwargs = dict(
        repository=tmp_path,
        name="digits",
        input_shape=(1, 12, 12),
        labels=list("abcde"),
        mean=[0.5],
        std=[0.25],
        provenance=PROVENANCE,
        max_batch_size=32,
    )
    first = export_model(model, **kwargs)  # type: ignore[arg-type]
    second = export_model(model, **kwargs)  # type: ignore[arg-type]
    assert (first.version, second.version) == (1, 2)
    model_dir = tmp_path / "digits"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt", "labels.txt"]
    assert (model_dir / "labels.txt").read_text() == "a\nb\nc\nd\ne\n"
    config = (model_dir / "config.pbtxt").read_text()
    for text in (
        'platform: "onnxruntime_onnx"',
        "max_batch_size: 32",
        "dims: [ 1, 12, 12 ]",
        'label_filename: "labels.txt"',
        "dynamic_batching",
    ):
        assert text in config
    meta = read_metadata(second.path)
    assert meta["stride.preprocess"] == {
        "channels": 1,
        "height": 12,
        "width": 12,
        "mean": [0.5],
        "std": [0.25],
        "scale": 255.0,
    }
    assert meta["stride.labels"] == list("abcde") and meta["stride.run_id"] == "r1"
    assert "instance_group [ { kind: KIND_CPU count: 1 } ]" in config
    gpu = export_model(model, **{**kwargs, "name": "on-gpu", "instance_kind": "gpu"})  # type: ignore[arg-type]
    assert "kind: KIND_GPU" in (gpu.model_dir / "config.pbtxt").read_text()
    with pytest.raises(ExportError, match="allowed: cpu, gpu, auto"):
        export_model(model, **{**kwargs, "instance_kind": "tpu"})  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="declares other shapes"):
        export_model(model, **{**kwargs, "labels": list("abcdef")})  # type: ignore[arg-type]


def test_a_model_failing_parity_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ExportError, match="not published"):
        export_model(
            _every_layer_model("tanh"),
            repository=tmp_path,
            name="m",
            input_shape=(1, 12, 12),
            labels=list("abcde"),
            mean=[0.0],
            std=[1.0],
            provenance=PROVENANCE,
        )
    assert [p.name for p in (tmp_path / "m").iterdir()] == []  # no version, no temp folder


def test_export_run_refuses_unfinished_runs(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "repo")
    run, _ = train_local(
        tiny_config(**{"training.epochs": 1}), runs=tmp_path, experiment="e", name="r"
    )
    (run.path / "summary.json").unlink()
    with pytest.raises(ExportError, match="running or interrupted"):
        export_run(run.path, tmp_path / "repo")
