"""Streamed training data: packed parquet and folders through Ray Data into the loop.

Uneven shards (many small ones, split sizes that do not divide by the workers) with two
workers: every rank runs the same number of steps, every validation and test image is
scored exactly once, and the figures match an in-memory evaluation of the same model.
All on the shared local Ray instance (2 CPUs).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import RunConfig, parse_config
from pipeline.data import load_splits
from pipeline.datafiles import DataError, DataRoot
from pipeline.manifest import read_manifest
from pipeline.packing import pack
from pipeline.ray_train import RunFailedError, check_fits, train_on_ray
from pipeline.run import train_local
from pipeline.streaming import StreamEval, StreamLoader, open_stream, wants_streaming
from runstore import RunDir
from tests.pipeline.conftest import tiny_config
from tests.pipeline.typed import not_none

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def synthetic_spec(samples: int = 309) -> Any:
    data = {"name": "synthetic", "image_size": [6, 6], "channels": 3, "num_classes": 3}
    return parse_config({"data": {**data, "num_samples": samples}}).data


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """309 synthetic 3x6x6 images in shards of about 40 rows: 215/47/47 per split."""
    out = tmp_path_factory.mktemp("uneven") / "packed"
    pack(synthetic_spec(), DataRoot.parse(str(out)), shard_mb=0.005)
    return out


def streamed(root: Path, **overrides: object) -> RunConfig:
    base = {
        "data.name": "parquet",
        "data.root": str(root),
        "data.streaming": "true",
        "training.batch_size": 16,
        "training.eval_batch_size": 7,
        "model.blocks.0.channels": 4,
    }
    return tiny_config(**{**base, **overrides})


def test_packed_manifest_and_splits(uneven: Path) -> None:
    manifest = read_manifest(DataRoot.parse(str(uneven)))
    assert manifest.sizes == {"train": 215, "val": 47, "test": 47}
    assert len(manifest.shards("train")) >= 5  # uneven shards
    memory = load_splits(synthetic_spec())
    assert (len(memory.train), len(memory.val), len(memory.test)) == (215, 47, 47)
    # The packed splits hold the same images as the in-memory ones (rows reordered).
    packed = load_splits(parse_config({"data": {"name": "parquet", "root": str(uneven)}}).data)
    for name in ("train", "val", "test"):
        a, b = getattr(memory, name), getattr(packed, name)
        key = lambda s: sorted(  # noqa: E731
            (int(label), img.numpy().tobytes())
            for img, label in zip(s.images, s.labels, strict=True)
        )
        assert key(a) == key(b), name
    assert packed.mean == pytest.approx(manifest.mean) and packed.mean == pytest.approx(
        memory.mean, abs=1e-6
    )


def _shares(datasets: dict[str, Any], world: int) -> list[dict[str, Any]]:
    from pipeline.ray_data import SplitDataConfig

    return SplitDataConfig(256).configure(datasets, world, None, None)


def _in_threads(fn: Any, n: int) -> list[Any]:
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = fn(i)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    if errors:
        raise errors[0]
    return out


def test_equal_steps_and_every_evaluation_image_once(ray_cluster: object, uneven: Path) -> None:
    from pipeline.ray_data import build_datasets
    from pipeline.streaming import Stream

    cfg = streamed(uneven)
    plan = open_stream(cfg)
    shares = _shares(build_datasets(plan, cfg.data, cfg.seed), 2)

    def rank(i: int) -> tuple[list[list[int]], dict[str, int]]:
        stream = Stream(plan.meta, shares[i])
        loader = StreamLoader(
            stream,
            batch_size=16,
            rank=i,
            world_size=2,
            device=torch.device("cpu"),
            augment=None,
            seed=0,
            spec=cfg.data,
        )
        epochs = []
        for epoch in (1, 2):
            loader.set_epoch(epoch)
            epochs.append([len(y) for _, y in loader])
        counts = {}
        for split in ("val", "test"):
            ev = StreamEval(stream, split, batch_size=7, device=torch.device("cpu"), spec=cfg.data)
            counts[split] = sum(len(y) for _, y in ev)
        return epochs, counts

    results = _in_threads(rank, 2)
    steps = -(-(215 // 2) // 16)  # 107 rows per rank, batches of 16: 7 steps
    for epochs, _ in results:
        assert [len(e) for e in epochs] == [steps, steps]
        assert all(sum(e) >= 107 for e in epochs)
    for split in ("val", "test"):
        assert sum(counts[split] for _, counts in results) == 47  # odd: no rank drops one


def test_two_workers_stream_uneven_shards(ray_cluster: dict, uneven: Path, tmp_path: Path) -> None:
    cfg = streamed(
        uneven,
        **{
            "scaling.workers": 2,
            "scaling.cpus_per_worker": 0.5,
            "training.epochs": 3,
            "early_stopping.enabled": "true",
            "early_stopping.patience": 1,
            "data.augment.crop_padding": 1,
        },
    )
    check_fits(cfg, ray_cluster)
    run, summary = train_on_ray(cfg, runs=tmp_path, experiment="s", name="two")
    assert summary.status == "completed" and summary.workers == 2
    record = run.read_config()
    assert record.data["sizes"] == {"train": 215, "val": 47, "test": 47}
    source = record.data["source"]
    assert source["streaming"] is True and source["name"] == "parquet"
    assert source["manifest_checksum"] == read_manifest(DataRoot.parse(str(uneven))).checksum
    # The kept model scored in memory on the same splits: the same figures, so every
    # validation and test image was counted exactly once across the two workers.
    memory = load_splits(cfg.data)
    model = _kept_model(cfg, run)
    for split, accuracy in (("val", summary.val_accuracy), ("test", summary.test_accuracy)):
        images = getattr(memory, split).images.float() / 255.0
        mean = torch.tensor(memory.mean).view(1, -1, 1, 1)
        std = torch.tensor(memory.std).view(1, -1, 1, 1)
        with torch.no_grad():
            predicted = model((images - mean) / std).argmax(1)
        correct = int((predicted == getattr(memory, split).labels).sum())
        assert not_none(accuracy) * 47 == pytest.approx(correct, abs=1e-6), split


def _kept_model(cfg: RunConfig, run: RunDir) -> torch.nn.Module:
    import io

    from pipeline.model import build_model

    model = build_model(cfg.model, input_shape=(3, 6, 6), num_classes=3)
    state = torch.load(
        io.BytesIO(not_none(run.read_checkpoint_file("model.pt"))), weights_only=True
    )
    model.load_state_dict(state)
    return model.eval()


def test_local_stream_resumes_from_its_checkpoint(
    ray_cluster: object, uneven: Path, tmp_path: Path
) -> None:
    from runstore import SummaryRecord

    first = streamed(uneven, **{"training.epochs": 1})
    run, summary = train_local(first, runs=tmp_path, experiment="r", name="r")
    assert summary.status == "completed"
    run.write_summary(SummaryRecord(status="failed", reason="the job died"))  # as if it had
    more = streamed(uneven, **{"training.epochs": 2})
    run, summary = train_local(more, runs=tmp_path, experiment="r", name="r", resume=True)
    assert summary.status == "completed" and summary.resumed_from_epoch == 1
    assert [r.epoch for r in run.read_metrics()] == [1, 2]


def test_auto_streams_a_uri_or_a_large_set_only(uneven: Path) -> None:
    small = parse_config({"data": {"name": "parquet", "root": str(uneven)}}).data
    assert not wants_streaming(small)  # local and within the memory budget: in memory
    tight = parse_config(
        {"data": {"name": "parquet", "root": str(uneven), "memory_budget_mb": 0.01}}
    ).data
    assert wants_streaming(tight)
    uri = parse_config({"data": {"name": "parquet", "root": "s3://bucket/data?region=x"}}).data
    assert wants_streaming(uri)
    assert not wants_streaming(parse_config({}).data)  # the digits: always in memory


# ------------------------------------------------------------------ folders and bad data


def _folder(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (10, 9, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / cls / f"{i:02d}.png")
    return root


def folder_config(root: Path, **overrides: object) -> RunConfig:
    base = {
        "data.name": "folder",
        "data.root": str(root),
        "data.image_size": "[6, 6]",
        "data.streaming": "true",
        "data.val_fraction": 0.25,
        "data.test_fraction": 0.25,
        "training.epochs": 1,
        "training.batch_size": 4,
    }
    return tiny_config(**{**base, **overrides})


def test_folder_streams_with_the_in_memory_split(ray_cluster: object, tmp_path: Path) -> None:
    root = _folder(tmp_path / "pics")
    cfg = folder_config(root)
    plan = open_stream(cfg)
    memory = load_splits(cfg.data)
    assert plan.meta.sizes == {"train": len(memory.train), "val": 6, "test": 6}
    assert plan.meta.mean == pytest.approx(memory.mean) and plan.meta.std == pytest.approx(
        memory.std
    )
    run, summary = train_local(cfg, runs=tmp_path / "runs", experiment="f", name="f")
    assert summary.status == "completed" and summary.skipped_images is None
    assert run.read_config().data["source"]["location"] == str(root)


def test_an_unreadable_image_fails_naming_it_or_is_skipped(
    ray_cluster: object, tmp_path: Path
) -> None:
    root = _folder(tmp_path / "pics")
    (root / "dog" / "05.png").write_bytes((root / "dog" / "05.png").read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match=r"cannot read image .*dog/05\.png.*max_bad_fraction 0"):
        train_local(folder_config(root), runs=tmp_path / "runs", experiment="b", name="strict")
    cfg = folder_config(root, **{"data.max_bad_fraction": 0.2})
    _, summary = train_local(cfg, runs=tmp_path / "runs", experiment="b", name="lenient")
    assert summary.status == "completed" and summary.skipped_images == 1


def test_bad_data_sets_are_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pics")
    (root / "bird").mkdir()
    with pytest.raises(DataError, match=r"pics/bird: class folder without PNG or JPEG images"):
        load_splits(folder_config(root).data)
    missing = tmp_path / "nothing"
    missing.mkdir()
    with pytest.raises(
        DataError, match=r"no manifest\.json; a parquet data set is made by stride data pack"
    ):
        read_manifest(DataRoot.parse(str(missing)))
    (missing / "manifest.json").write_text('{"format": "webdataset"}')
    with pytest.raises(DataError, match="not a Stride data set manifest"):
        read_manifest(DataRoot.parse(str(missing)))


def test_a_changed_shard_fails_naming_it(ray_cluster: object, tmp_path: Path) -> None:
    out = tmp_path / "packed"
    pack(synthetic_spec(60), DataRoot.parse(str(out)), shard_mb=1)
    shard = out / "val" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    spec = parse_config({"data": {"name": "parquet", "root": str(out)}}).data
    with pytest.raises(
        DataError, match=r"shard .*val/part-00000\.parquet: sha256 .* does not match"
    ):
        load_splits(spec)
    cfg = streamed(out, **{"training.epochs": 1})
    with pytest.raises(DataError, match=r"val/part-00000\.parquet: sha256"):
        train_local(cfg, runs=tmp_path / "runs", experiment="c", name="c")
    with pytest.raises(RunFailedError, match=r"val/part-00000\.parquet: sha256"):
        train_on_ray(cfg, runs=tmp_path / "runs", experiment="c", name="ray")


def test_pack_again_is_a_no_op_or_refused(tmp_path: Path) -> None:
    out = DataRoot.parse(str(tmp_path / "packed"))
    first = pack(synthetic_spec(60), out)
    again = pack(synthetic_spec(60), out)
    assert first.written and not again.written
    assert again.manifest.checksum == first.manifest.checksum
    with pytest.raises(DataError, match="already holds a packed data set"):
        pack(synthetic_spec(70), out)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no manifest\.json .*interrupted pack"):
        pack(synthetic_spec(60), DataRoot.parse(str(stray)))


def test_config_refuses_what_cannot_stream() -> None:
    from pipeline.config import ConfigError
    from pipeline.spec import validate

    needs = r"data\.streaming: true needs data\.name folder or parquet"
    with pytest.raises(ConfigError, match=needs):
        validate(tiny_config(**{"data.streaming": "true"}))
    with pytest.raises(ConfigError, match="carries credentials in the URI"):
        parse_config({"data": {"name": "parquet", "root": "s3://key:secret@bucket/x"}})
    with pytest.raises(ConfigError, match="carries credentials"):
        parse_config({"data": {"name": "parquet", "root": "s3://bucket/x?secret_key=s"}})
    with pytest.raises(ConfigError, match=r"data\.max_bad_fraction"):
        validate(tiny_config(**{"data.max_bad_fraction": 1.5}))


def test_a_stream_needs_cpus_beside_the_workers(uneven: Path) -> None:
    cfg = streamed(uneven, **{"scaling.workers": 2})
    with pytest.raises(
        ValueError,
        match=r"streams its data: its workers take 2 CPU and Ray Data needs data.task_cpus=0.5",
    ):
        check_fits(cfg, {"CPU": 2.0})
    check_fits(cfg, {"CPU": 2.5})


def test_sweep_streams_single_and_multi_worker_trials(
    ray_cluster: dict, uneven: Path, tmp_path: Path
) -> None:
    from pipeline.search import build_plan, parse_grid
    from pipeline.sweep import concurrency, prepare, run_sweep
    from pipeline.sweep_results import SweepView

    base = streamed(uneven, **{"training.epochs": 2, "scaling.cpus_per_worker": 0.5})
    sweep = prepare(base.to_dict(), [], build_plan(parse_grid(["scaling.workers=1,2"])))
    limit = concurrency(sweep.variants, ray_cluster)
    assert limit == 3  # (2 CPUs - 0.5 for Ray Data) / 0.5 per worker
    view = SweepView([])
    runs = run_sweep(sweep, store=tmp_path, experiment="sw", max_concurrent=1, view=view)
    assert [r.state for r in runs] == ["completed", "completed"]
    assert len(view.runs) == 2
    for r in runs:
        stored = RunDir(tmp_path / "sw" / r.run_id)
        record = stored.read_config()
        assert record.data["source"]["streaming"] is True
        assert record.data["sizes"] == {"train": 215, "val": 47, "test": 47}
        assert record.effective["workers"] == int(r.grid["scaling.workers"])
        assert [e.epoch for e in stored.read_metrics()] == [1, 2]
