"""What the fuzz targets run against: model repositories, servicers and a run store in a temp dir.

Built once per process (atheris runs millions of inputs through one workspace;
hypothesis reuses it across examples). Nothing here is a fake of the code
under test: the servicers, the repository and the run-store reader are the
real ones; only the gRPC context is a stand-in, since the servicer is called
in-process without a channel.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.repo import linear_model


class Context:
    """The parts of grpc.ServicerContext that the servicers read, for in-process calls."""

    def time_remaining(self) -> float | None:
        return None  # no client deadline: the server's own timeouts apply

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Any) -> bool:
        return True


CONTEXT = Context()

# A config.pbtxt that loads next to the config workspace's model (REPO/m/1/model.onnx).
CONFIG_BASE = """name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 8, 8 ] } ]
output [
  { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] },
  { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }
]
"""

# One good run of the fuzzed experiment, so that comparisons have something to compare with.
GOOD_CONFIG = {
    "schema": 1,
    "experiment": "fz",
    "run_id": "good-s0-0000",
    "config": {"seed": 0, "optimizer": {"name": "adam"}, "model": {"activation": "relu"}},
    "grid": {"optimizer.name": "adam"},
}
GOOD_EPOCHS = [
    {
        "epoch": e,
        "train_loss": 1.0 / e,
        "train_accuracy": 0.5 + e / 10,
        "val_loss": 1.1 / e,
        "val_accuracy": 0.5 + e / 11,
        "lr": 0.001,
        "grad_norms": [{"layer": "features.0.conv", "norm": 0.1}, {"layer": "head", "norm": 0.5}],
        "epoch_seconds": 0.5,
        "elapsed_seconds": 0.5 * e,
        "images_per_second": 1000.0,
    }
    for e in (1, 2, 3)
]
GOOD_SUMMARY = {
    "status": "completed",
    "test_loss": 0.3,
    "test_accuracy": 0.9,
    "best_epoch": 3,
    "best_metric": "val_loss",
    "best_value": 0.36,
    "epochs_run": 3,
    "wall_seconds": 1.5,
    "device": "cpu",
}


@dataclass
class Workspace:
    """Temp folders and the live objects the targets call."""

    root: Path
    repo: Path  # models digits (batching), nobatch (max_batch_size 0), rgb (3x4x4)
    repository: Any  # ModelRepository over `repo`
    servicer: Any  # InferenceServicer over `repository`
    names_repo: Path  # a second repository that load/unload by name may churn
    names_servicer: Any
    config_repo: Path  # REPO/m/1/model.onnx; the fuzzed text becomes REPO/m/config.pbtxt
    config_repository: Any
    runs: Path  # RUNS/fz/good-s0-0000 and RUNS/fz/<fuzzed run>
    analysis: Any  # AnalysisServicer over `runs`

    def close(self) -> None:
        for repository in (self.repository, self.config_repository):
            repository.close()
        self.names_servicer.repository.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _repository(repo: Path) -> tuple[Any, Any]:
    from services.inference.repository import ModelRepository
    from services.inference.runtime import RuntimeOptions
    from services.inference.servicer import InferenceServicer

    # One intra-op thread: fuzzing runs many tiny batches, and the machine is shared.
    repository = ModelRepository(repo, RuntimeOptions(intra_op_threads=1))
    repository.poll()
    return repository, InferenceServicer(repository, version="fuzz", model_control=True)


@functools.cache
def workspace() -> Workspace:
    """The process's workspace (made on first use)."""
    from runstore import RunStore
    from services.analysis.servicer import AnalysisServicer

    # fuzz/run.py points STRIDE_FUZZ_TMP at a folder it removes: libFuzzer ends the process
    # without running Python's exit handlers, so the workspace cannot clean up after itself.
    root = Path(tempfile.mkdtemp(prefix="stride-fuzz-", dir=os.environ.get("STRIDE_FUZZ_TMP")))
    repo = root / "repository"
    linear_model(repo, "digits", max_batch=8)
    linear_model(repo, "nobatch", max_batch=0, batching=False)
    linear_model(repo, "rgb", shape=(3, 4, 4), max_batch=4, batching=False)
    repository, servicer = _repository(repo)
    names_repo = root / "names"
    linear_model(names_repo, "digits", max_batch=4)
    _, names_servicer = _repository(names_repo)
    config_repo = root / "configs"
    model = linear_model(config_repo, "m", max_batch=4)
    (model / "config.pbtxt").unlink()
    from services.inference.repository import ModelRepository
    from services.inference.runtime import RuntimeOptions

    config_repository = ModelRepository(config_repo, RuntimeOptions(intra_op_threads=1))
    runs = root / "runs"
    good = runs / "fz" / "good-s0-0000"
    good.mkdir(parents=True)
    (good / "config.json").write_text(json.dumps(GOOD_CONFIG))
    (good / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in GOOD_EPOCHS))
    (good / "summary.json").write_text(json.dumps(GOOD_SUMMARY))
    analysis = AnalysisServicer(RunStore(str(runs)))
    return Workspace(
        root=root,
        repo=repo,
        repository=repository,
        servicer=servicer,
        names_repo=names_repo,
        names_servicer=names_servicer,
        config_repo=config_repo,
        config_repository=config_repository,
        runs=runs,
        analysis=analysis,
    )
