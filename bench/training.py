"""Training benchmark: the Ray Train path against the plain single-process loop.

`measure(quick=False, gpu=False)` returns a dict of figures; `python bench/training.py`
prints them as a table (`--json` for JSON). Every ratio is measured side by side in
one process, since these machines are noisy: a ratio holds, an absolute time does not.

- throughput: median images/s of the warm epochs (after the first) of the reference CNN (configs/
  reference_cnn.yaml, synthetic 3x32x32) through `train_on_ray` with 1 and 2 workers,
  divided by the same config through the plain loop (`train_local`), same batch and
  device; on CPU the single worker gets every core, the two workers one core each.
- fixed start-up cost of a run: wall time of a whole run minus the time its loop
  ran (`summary.wall_seconds`), for the Ray path and for the plain loop.
- fixed cost of a sweep trial on Ray Tune: a one-trial one-epoch sweep's wall time minus
  its loop's, and per trial of four one-epoch trials run one after another (the trial
  process is reused). The figures from before Tune: docs/notes/training-costs.md.
- fixed start-up cost of a sweep: a sweep of two one-epoch runs, its wall time.
- the 5-optimizer x 2-seed sweep on the digits, its wall time (skipped with quick).
- ASHA against the full grid on 5 optimizers x 4 learning rates on the digits: epochs
  trained, wall time, and whether both pick the same best configuration (skipped with
  quick; `asha_epochs` sets the runs' length).
- GPU mode: the same on CUDA with bf16 and channels_last, plus a minimal hand-written
  PyTorch loop (no Stride code) as a second baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import RunConfig, load_config  # noqa: E402
from pipeline.ray_train import ensure_ray, train_on_ray  # noqa: E402
from pipeline.run import train_local  # noqa: E402
from pipeline.search import build_plan, parse_grid  # noqa: E402
from pipeline.sweep import Sweep, concurrency, prepare, run_sweep  # noqa: E402
from pipeline.sweep_results import SweepRun, best_run  # noqa: E402

OPTIMIZERS = "sgd,momentum,adagrad,rmsprop,adam"
LEARNING_RATES = "0.001,0.01,0.1,1.0"


def _reference(quick: bool, gpu: bool, extra: list[str], samples: int | None = None) -> RunConfig:
    samples = samples or (1024 if quick else (32768 if gpu else 3072))
    items = [
        "training.progress=false",
        f"data.num_samples={samples}",
        f"training.epochs={2 if quick else 4}",
        *extra,
    ]
    if gpu:
        items += ["scaling.use_gpu=true", "scaling.precision=bf16", "scaling.channels_last=true"]
    return load_config(ROOT / "configs" / "reference_cnn.yaml", items)


def _warm_ips(run_dir: Path) -> float:
    """Median images/s over the epochs after the first (which pays for warm-up)."""
    from runstore import RunDir

    records = RunDir(run_dir).read_metrics()
    warm = records[1:] or records
    return float(statistics.median(r.images_per_second or 0.0 for r in warm))


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def throughput(
    quick: bool, gpu: bool, store: Path, samples: int | None = None, two_workers: bool = True
) -> dict[str, Any]:
    """Plain loop vs Ray 1 worker vs Ray 2 workers, interleaved, best of `repeats`."""
    cores = os.cpu_count() or 1
    plain_cfg = _reference(quick, gpu, [], samples)
    one = ["scaling.workers=1", f"scaling.cpus_per_worker={cores}"]
    one_cfg = _reference(quick, gpu, one, samples)
    two = ["scaling.workers=2", f"scaling.cpus_per_worker={max(1, cores // 2)}"]
    two_cfg = _reference(quick, gpu, two, samples)
    repeats = 1 if quick else 2
    ips: dict[str, list[float]] = {"plain": [], "ray1": [], "ray2": []}
    fixed: dict[str, list[float]] = {"plain": [], "ray1": []}
    for _ in range(repeats):
        wall, (run, summary) = _timed(lambda: train_local(plain_cfg, runs=store, experiment="tp"))
        ips["plain"].append(_warm_ips(run.path))
        fixed["plain"].append(wall - summary.wall_seconds)
        wall, (run, summary) = _timed(lambda: train_on_ray(one_cfg, runs=store, experiment="tp"))
        ips["ray1"].append(_warm_ips(run.path))
        fixed["ray1"].append(wall - summary.wall_seconds)
        if two_workers and (not gpu or _gpus() >= 2):
            _, (run, _s) = _timed(lambda: train_on_ray(two_cfg, runs=store, experiment="tp"))
            ips["ray2"].append(_warm_ips(run.path))
    plain, ray1 = max(ips["plain"]), max(ips["ray1"])
    out: dict[str, Any] = {
        "images_per_s_plain": plain,
        "images_per_s_ray_1_worker": ray1,
        "ratio_ray_1_worker_over_plain": ray1 / plain,
        "fixed_cost_s_ray_run": statistics.median(fixed["ray1"]),
        "fixed_cost_s_plain_run": statistics.median(fixed["plain"]),
        "batch_size": plain_cfg.training.batch_size,
        "device": "cuda" if gpu else f"cpu ({cores} cores)",
    }
    if ips["ray2"]:
        out["images_per_s_ray_2_workers"] = max(ips["ray2"])
        out["ratio_ray_2_workers_over_plain"] = max(ips["ray2"]) / plain
    if gpu:
        out["images_per_s_minimal_torch_loop"] = minimal_torch_loop(plain_cfg)
        out["ratio_ray_1_worker_over_minimal_loop"] = ray1 / out["images_per_s_minimal_torch_loop"]
    return out


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def minimal_torch_loop(cfg: RunConfig, steps: int = 60) -> float:
    """A hand-written bf16 + channels_last loop on random data: the PyTorch baseline."""
    import torch
    import torch.nn.functional as F

    from pipeline.model import build_model

    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    model = build_model(cfg.model, input_shape=(3, 32, 32), num_classes=10)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n = cfg.training.batch_size
    x = torch.randn(n, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (n,), device=device)
    for step in range(steps + 10):
        if step == 10:  # after warm-up and cuDNN autotuning
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * n / (time.perf_counter() - start)


def _sweep(
    store: Path, experiment: str, base: dict[str, Any], extra: list[str], **plan: Any
) -> tuple[float, list[SweepRun], Sweep]:
    grid = plan.pop("grid")
    limit = plan.pop("max_concurrent", None)
    sweep = prepare(base, ["training.progress=false", *extra], build_plan(parse_grid(grid), **plan))
    limit = limit or concurrency(sweep.variants, ensure_ray())
    wall, runs = _timed(
        lambda: run_sweep(sweep, store=store, experiment=experiment, max_concurrent=limit)
    )
    return wall, runs, sweep


def _loop_s(runs: list[SweepRun]) -> list[float]:
    return [r.summary.wall_seconds or 0.0 for r in runs if r.summary is not None]


def sweep_costs(quick: bool, store: Path, asha_epochs: int = 10) -> dict[str, Any]:
    """Fixed cost per Tune trial, the two-run one-epoch sweep, the digits 5 x 2 sweep,
    and ASHA against the full 5 x 4 grid."""
    import yaml

    base = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    one_epoch = ["training.epochs=1"]
    out: dict[str, Any] = {"load_average_1m_start": os.getloadavg()[0]}
    wall, runs, _ = _sweep(store, "trial-cost", base, one_epoch, grid=["optimizer.name=adam"])
    out["fixed_cost_s_tune_trial_first"] = wall - sum(_loop_s(runs))
    four = "optimizer.name=sgd,momentum,rmsprop,adam"
    sequential = {"grid": [four], "max_concurrent": 1}
    wall, runs, _ = _sweep(store, "trial-cost-4", base, one_epoch, **sequential)
    out["fixed_cost_s_tune_trial_mean_of_4_in_a_row"] = (wall - sum(_loop_s(runs))) / 4
    wall, runs, _ = _sweep(store, "sweep-tiny", base, one_epoch, grid=["optimizer.name=sgd,adam"])
    out["sweep_2_runs_1_epoch_wall_s"] = wall
    out["sweep_2_runs_loop_s_mean"] = statistics.fmean(_loop_s(runs))
    if not quick:
        grid = [f"optimizer.name={OPTIMIZERS}"]
        wall, runs, _ = _sweep(store, "sweep-digits", base, [], grid=grid, seeds=2)
        out["sweep_5_optimizers_x_2_seeds_digits_wall_s"] = wall
        out["sweep_5x2_completed"] = sum(r.state == "completed" for r in runs)
        out["sweep_5x2_loop_s_sum"] = sum(_loop_s(runs))
        out["sweep_5x2_test_accuracy_mean"] = statistics.fmean(
            r.summary.test_accuracy or 0.0 for r in runs if r.state == "completed" and r.summary
        )
        out.update(asha_against_grid(store, base, asha_epochs))
    out["load_average_1m_end"] = os.getloadavg()[0]
    return out


def asha_against_grid(store: Path, base: dict[str, Any], epochs: int) -> dict[str, Any]:
    """5 optimizers x 4 learning rates, every run `epochs` long (no early stopping, so
    the grid's cost is fixed): the full grid, then ASHA (grace 1 epoch, keep the top
    half per rung)."""
    extra = [f"training.epochs={epochs}", "early_stopping.enabled=false"]
    grid = [f"optimizer.name={OPTIMIZERS}", f"optimizer.lr={LEARNING_RATES}"]
    out: dict[str, Any] = {}
    for name, plan in (
        ("grid", {}),
        ("asha", {"scheduler": "asha", "grace_epochs": 1}),
    ):
        wall, runs, _ = _sweep(store, f"asha-{name}", base, extra, grid=grid, **plan)
        best = best_run(runs)
        out[f"{name}_5x4_wall_s"] = wall
        out[f"{name}_5x4_epochs_trained"] = sum(
            (r.summary.epochs_run or 0) for r in runs if r.summary is not None
        )
        out[f"{name}_5x4_stopped"] = sum(r.state == "stopped" for r in runs)
        out[f"{name}_5x4_best"] = best.label if best else None
        out[f"{name}_5x4_best_val_accuracy"] = (
            best.summary.val_accuracy if best and best.summary else None
        )
    out["asha_finds_the_grid_best"] = out["asha_5x4_best"] == out["grid_5x4_best"]
    return out


def measure(
    quick: bool = False,
    gpu: bool = False,
    *,
    samples: int | None = None,
    two_workers: bool = True,
    sweeps: bool = True,
) -> dict[str, Any]:
    """Every training figure, measured now on this machine.

    `samples`, `two_workers=False` and `sweeps=False` make the shortest version
    (bench/run.py --quick and its smoke test).
    """
    with tempfile.TemporaryDirectory(prefix="stride-bench-") as tmp:
        store = Path(tmp)
        init_s, resources = _timed(ensure_ray)
        figures: dict[str, Any] = {"ray_init_s": init_s, "cluster_cpus": resources.get("CPU")}
        figures.update(throughput(quick, gpu, store, samples, two_workers))
        if sweeps:
            figures.update(sweep_costs(quick, store))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller data, no 5x2 sweep (~2 min)")
    parser.add_argument("--gpu", action="store_true", help="CUDA, bf16, channels_last")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(quick=args.quick, gpu=args.gpu)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            text = f"{value:,.3f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
