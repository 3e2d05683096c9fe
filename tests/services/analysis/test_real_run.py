"""The reader on run folders that the real trainer wrote (needs the training extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstore import RunStore
from services.analysis.compare import Selection, compare, gradient_flow, select

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_compare_reads_what_training_writes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from pipeline.config import load_config
    from pipeline.run import train_local

    cfg = load_config(
        ROOT / "configs" / "course" / "optimizers.yaml",
        ["optimizer.name=adam", "training.epochs=2", "seed=1"],
    )
    train_local(cfg, runs=tmp_path, experiment="real", name="adam-s1")
    store = RunStore(str(tmp_path))
    scan = store.scan("real")
    assert scan.malformed == ()
    assert [r.status for r in scan.runs] == ["completed"]
    groups = select(store, Selection("real"))
    comparison = compare(groups, target=0.5)
    assert comparison.ranking == ("adam",)
    for group in comparison.groups:
        [run] = group.runs
        assert run.epochs == 2 and run.seed == 1
        assert run.test_accuracy is not None and 0.0 <= run.test_accuracy <= 1.0
        assert run.seconds_to_target is not None and run.seconds_to_target > 0
    flows = gradient_flow(groups)
    for flow in flows:
        assert flow.layers[0].layer != flow.layers[-1].layer
        assert flow.ratio > 0
