"""Data benchmark: training data streamed through Ray Data against the in-memory path.

`measure(mode)` (full, quick or smoke) returns a dict of figures; `python bench/data.py`
prints them (`--json` for JSON, `--large N` for the size of the large epoch). Every
training run is a fresh subprocess (`--child`), so that its peak RSS is its own; the
streamed ones connect to this process's Ray instance, whose worker processes run Ray
Data's tasks.

- pack: `stride data pack`'s rate over a folder of 32x32 PNGs (images/s, one pass).
- throughput: the reference CNN (configs/reference_cnn.yaml) at 3x32x32, one CPU thread
  for the loop, on one packed synthetic set: in memory (data.streaming=false), streamed
  from the local parquet, and streamed from a local S3 server (moto); the median
  images/s of the warm epochs (after the first), as ratios to in memory.
- memory: peak RSS of the training process on 1x and 4x the images, streamed and in
  memory (a small CNN, one epoch).
- large: one epoch streamed over `large` 3x32x32 images (250,000 in full mode) with
  the small CNN: peak RSS of the training process and of every Ray worker process of
  this instance (sampled each second), peak object store use, wall time.
- accuracy: the digits packed and streamed against in memory, same config
  (configs/digits.yaml), seeds 0, 1, 2: test accuracy of each, the means' difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {  # mode: (pack PNGs, throughput images, memory 1x images, large images, seeds, epochs)
    "full": (2000, 2048, 16384, 250_000, 3, None),
    "quick": (500, 1024, 8192, 100_000, 1, 5),
    "smoke": (64, 128, 0, 0, 0, 1),  # pack and local throughput only (the test suite's run)
}
SMALL_CNN = [  # the small CNN of the memory and large figures: cheap per image
    "model.blocks=[{type: conv, channels: 8, kernel: 3, padding: same}, "
    "{type: pool, kind: max, size: 4}]",
    "model.head.hidden=[]",
    "training.batch_size=256",
    "training.eval_batch_size=1024",
    "early_stopping.enabled=false",
    "training.progress=false",
]


# ---------------------------------------------------------------- synthetic parquet


class SyntheticSource:
    """`images` 3x32x32 images of 10 classes (prototypes plus noise, made block by block
    so that a million never sit in memory), 90/5/5 % train/val/test: a source for
    `pipeline.packing.write_pack`."""

    def __init__(self, images: int, seed: int = 0) -> None:
        self.shape = (3, 32, 32)
        self.classes = tuple(f"class{i}" for i in range(10))
        val = test = max(10, images // 20)
        self.sizes = {"train": images - val - test, "val": val, "test": test}
        self.stats = None  # computed from the pixels as they are written
        self.fingerprint = f"synthetic-{images}-{seed}"
        self.location = f"synthetic:{images}"
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.protos = rng.random((10, *self.shape), dtype=np.float32)

    def split_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "val_fraction": 0.05, "test_fraction": 0.05}

    def batches(self, split: str, notes: list[str], progress: Any) -> Iterator[Any]:
        offset = {"train": 0, "val": self.sizes["train"]}.get(
            split, self.sizes["train"] + self.sizes["val"]
        )
        rng = np.random.default_rng([self.seed, offset])
        for start in range(0, self.sizes[split], 8192):
            n = min(8192, self.sizes[split] - start)
            labels = rng.integers(0, 10, n)
            noise = rng.standard_normal((n, *self.shape), dtype=np.float32) * 0.25
            images = ((self.protos[labels] * 0.6 + 0.2 + noise).clip(0, 1) * 255).astype(np.uint8)
            ids = np.arange(offset + start, offset + start + n)
            yield images, labels, ids, [f"{split}:{i}" for i in ids.tolist()]


def write_synthetic(out: Path | str, images: int) -> float:
    """Pack `images` synthetic images at `out` (a path or URI); returns the seconds."""
    from pipeline.datafiles import DataRoot
    from pipeline.packing import write_pack

    t0 = time.perf_counter()
    write_pack(SyntheticSource(images), DataRoot.parse(str(out)), name="synthetic")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- one run, in a child


def child(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run here (`--child`), as `train_local` does: its summary, warm images/s,
    the share of the training loop spent waiting for streamed data, and this process's
    peak RSS."""
    import torch

    from pipeline.config import parse_config
    from pipeline.run import resolve_run
    from pipeline.train import LocalContext, Trainer
    from runstore import StoreLocation

    torch.set_num_threads(int(job.get("threads", 1)))
    cfg = parse_config(job["config"])
    t0 = time.perf_counter()
    run = resolve_run(StoreLocation.parse(job["runs"]), "bench", job["name"], cfg, False)
    ctx = LocalContext(False, run)
    trainer = Trainer(cfg, ctx, run)
    summary = trainer.fit()
    ctx.close()
    wall = time.perf_counter() - t0
    records = run.read_metrics()
    warm = [r.images_per_second or 0.0 for r in (records[1:] or records)]
    loader = trainer.train_loader
    loop = getattr(loader, "loop_seconds", 0.0)
    return {
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through exec
        "peak_rss_mb": _status_kb(os.getpid(), "VmHWM") / 1024,
        # at the end: private memory, and the object store's shared pages it maps
        "rss_anon_mb": _status_kb(os.getpid(), "RssAnon") / 1024,
        "rss_shmem_mb": _status_kb(os.getpid(), "RssShmem") / 1024,
        "images_per_s": float(statistics.median(warm)),
        "data_wait_share": getattr(loader, "wait_seconds", 0.0) / loop if loop else None,
        "test_accuracy": summary.test_accuracy,
        "epochs": summary.epochs_run,
        "wall_s": wall,
        "train_s": summary.train_seconds,
    }


def run_child(config: dict[str, Any], runs: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    job = {"config": config, "runs": str(runs), "name": name, "threads": 1}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
        env=env,
        cwd=runs,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench run {name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _config(base: str, items: list[str]) -> dict[str, Any]:
    from pipeline.config import load_config

    return load_config(ROOT / "configs" / base, items).to_dict()


# ---------------------------------------------------------------- Ray's processes


class RayWatch:
    """Peak RSS of this Ray instance's worker processes (children of its raylet) and
    peak object store use, sampled every `interval` seconds while it runs."""

    def __init__(self, interval: float = 1.0) -> None:
        import ray

        self.interval = interval
        node: Any = ray._private.worker._global_node
        self.raylet: int = _raylet_pid(str(node.get_session_dir_path()))
        self.peaks: dict[int, float] = {}
        self.store_peak_mb: float = 0.0
        self._stop: threading.Event = threading.Event()
        self._thread: threading.Thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RayWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for pid in _children(self.raylet):
            peak = _status_kb(pid, "VmHWM") / 1024
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
        with contextlib.suppress(Exception):
            self.store_peak_mb = max(self.store_peak_mb, _store_used_mb())


def _raylet_pid(session: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                line = (entry / "cmdline").read_bytes()
                if b"raylet" in line.split(b"\0")[0] and session.encode() in line:
                    return int(entry.name)
    raise RuntimeError(f"no raylet of {session}")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                status = (entry / "status").read_text()
                if f"\nPPid:\t{parent}\n" in status:
                    found.append(int(entry.name))
    return found


def _status_kb(pid: int, key: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return 0.0


def _store_used_mb() -> float:
    """Object store memory in use on this instance (Ray's memory summary)."""
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    for line in text.splitlines():
        if "Plasma memory usage" in line:
            return float(line.split("Plasma memory usage")[1].split("MiB")[0].strip())
    return 0.0


# ---------------------------------------------------------------- the figures


def _png_folder(root: Path, images: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _decode_rate(folder: Path) -> float:
    """PNGs read and decoded per second by one core, in this process: pack's baseline."""
    from pipeline.datafiles import decode_image

    files = sorted(folder.rglob("*.png"))
    t0 = time.perf_counter()
    for path in files:
        decode_image(path.read_bytes(), 3, (32, 32))
    return len(files) / (time.perf_counter() - t0)


def _moto() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"


def measure(mode: str = "full", large: int | None = None) -> dict[str, Any]:
    import ray

    from pipeline.config import parse_config
    from pipeline.datafiles import DataRoot
    from pipeline.packing import pack
    from pipeline.ray_train import ensure_ray

    pngs, throughput_n, memory_n, large_n, seeds, epochs = SIZES[mode]
    large_n = large or large_n
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ.setdefault(key, value)
    if not ray.is_initialized():  # a 1 GiB object store, as `ray start --object-store-memory`
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=2**30)
    ensure_ray()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    out: dict[str, Any] = {"images": {"pack_pngs": pngs, "throughput": throughput_n,
                                      "memory_1x": memory_n, "large": large_n}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="stride-bench-data-") as tmp:
        base = Path(tmp)
        runs = base / "runs"
        runs.mkdir()
        # pack: a folder of PNGs, one streaming pass on Ray Data
        folder = _png_folder(base / "pngs", pngs)
        spec = parse_config({"data": {"name": "folder", "root": str(folder),
                                      "image_size": [32, 32]}}).data  # fmt: skip
        packed = pack(spec, DataRoot.parse(str(base / "pngs-packed")))
        out["pack_images_per_s"] = packed.images / packed.seconds
        out["decode_images_per_s_one_core"] = _decode_rate(folder)
        # throughput: in memory, streamed from local parquet, from S3
        write_synthetic(base / "tp", throughput_n)
        server, options = _moto()
        try:
            common = ["data.name=parquet", "training.progress=false", "training.epochs=3"]
            cases = {
                "memory": [f"data.root={base / 'tp'}", "data.streaming=false"],
                "local": [f"data.root={base / 'tp'}", "data.streaming=true"],
            }
            if mode != "smoke":
                bucket = DataRoot.parse(f"s3://bench?{options}&allow_bucket_creation=true")
                bucket.filesystem()[0].create_dir("bench")
                write_synthetic(f"s3://bench/tp?{options}", throughput_n)
                cases["s3"] = [f"data.root=s3://bench/tp?{options}", "data.streaming=true"]
            for case, items in cases.items():
                cfg = _config("reference_cnn.yaml", [*common, *items])
                result = run_child(cfg, runs, f"tp-{case}", env)
                out[f"throughput_{case}_images_per_s"] = result["images_per_s"]
                if result["data_wait_share"] is not None:
                    out[f"throughput_{case}_data_wait_share"] = result["data_wait_share"]
        finally:
            server.stop()
        if mode == "smoke":
            return out
        # memory: 1x and 4x, streamed and in memory
        for scale in (1, 4):
            root = base / f"mem{scale}"
            write_synthetic(root, memory_n * scale)
            for streaming in ("false", "true"):
                items = [*SMALL_CNN, "data.name=parquet", f"data.root={root}",
                         f"data.streaming={streaming}", "training.epochs=1"]  # fmt: skip
                cfg = _config("reference_cnn.yaml", items)
                what = "streamed" if streaming == "true" else "memory"
                result = run_child(cfg, runs, f"mem-{scale}x-{what}", env)
                out[f"peak_rss_mb_{what}_{scale}x"] = result["peak_rss_mb"]
                out[f"rss_anon_mb_{what}_{scale}x"] = result["rss_anon_mb"]
        # large: one streamed epoch
        root = base / "large"
        out["large_write_s"] = write_synthetic(root, large_n)
        items = [*SMALL_CNN, "data.name=parquet", f"data.root={root}",
                 "data.streaming=true", "training.epochs=1"]  # fmt: skip
        with RayWatch() as watch:
            result = run_child(_config("reference_cnn.yaml", items), runs, "large", env)
        out["large_peak_rss_mb_trainer"] = result["peak_rss_mb"]
        out["large_rss_anon_mb_trainer_end"] = result["rss_anon_mb"]
        out["large_rss_shmem_mb_trainer_end"] = result["rss_shmem_mb"]
        out["large_peak_rss_mb_ray_workers_max"] = max(watch.peaks.values(), default=0.0)
        out["large_ray_worker_processes"] = len(watch.peaks)
        out["large_object_store_peak_mb"] = watch.store_peak_mb
        out["large_epoch_s"] = result["train_s"]
        out["large_images_per_s"] = result["images_per_s"]
        out["large_data_wait_share"] = result["data_wait_share"]
        # accuracy: the digits packed and streamed against in memory
        if seeds:
            pack(parse_config({}).data, DataRoot.parse(str(base / "digits")))
            extra = [f"training.epochs={epochs}"] if epochs else []
            for streaming in ("memory", "streamed"):
                accs = []
                for seed in range(seeds):
                    items = [*extra, "training.progress=false", f"seed={seed}"]
                    if streaming == "streamed":
                        items += ["data.name=parquet", f"data.root={base / 'digits'}",
                                  "data.streaming=true"]  # fmt: skip
                    cfg = _config("digits.yaml", items)
                    result = run_child(cfg, runs, f"acc-{streaming}-{seed}", env)
                    accs.append(result["test_accuracy"])
                out[f"accuracy_{streaming}"] = accs
            out["accuracy_mean_difference"] = statistics.mean(
                out["accuracy_streamed"]
            ) - statistics.mean(out["accuracy_memory"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=list(SIZES), default="full")
    parser.add_argument("--large", type=int, help="images of the large streamed epoch")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    figures = measure(args.mode, args.large)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:45} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
