"""The default config trains on the digits to >= 97% and exports a model that agrees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.config import load_config
from pipeline.data import load_splits
from pipeline.export import export_run, read_metadata
from pipeline.run import train_local

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_config_reaches_97_percent_and_exports(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "digits.yaml", ["training.progress=false"])
    run, summary = train_local(cfg, runs=tmp_path / "runs", experiment="e2e", name="digits")
    assert summary.status == "completed"
    assert summary.test_accuracy is not None and summary.test_accuracy >= 0.97, summary
    result = export_run(run.path, tmp_path / "repo")
    # Score the exported model on the same test split, preprocessing from its metadata.
    meta = read_metadata(result.path)["stride.preprocess"]
    splits = load_splits(cfg.data)
    x = splits.test.images.numpy().astype(np.float32) / splits.scale
    x = (x - np.array(meta["mean"], np.float32).reshape(1, -1, 1, 1)) / np.array(
        meta["std"], np.float32
    ).reshape(1, -1, 1, 1)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probabilities"], {"input": x})
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(1) == splits.test.labels.numpy()).mean())
    assert accuracy == pytest.approx(summary.test_accuracy, abs=1e-9)
