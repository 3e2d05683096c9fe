"""The harness's one table: each figure next to the baseline it is divided by.

`table(sections)` turns the raw figures of bench/run.py's sections into rows;
`render(doc)` prints them. A row is a dict: section, figure, value, baseline,
baseline_value, ratio (value / baseline_value), note.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def _row(
    section: str,
    figure: str,
    value: float | None,
    baseline: str,
    base: float | None,
    note: str = "",
    ratio: float | None = None,
) -> Row:
    if ratio is None and value is not None and base:
        ratio = value / base
    return {
        "section": section,
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "baseline_value": base,
        "ratio": ratio,
        "note": note,
    }


def _training(f: dict[str, Any]) -> list[Row]:
    s, plain = "training", f.get("images_per_s_plain")
    out = [
        _row(s, "Ray, 1 worker: images/s", f.get("images_per_s_ray_1_worker"),
             "plain loop images/s", plain, f.get("device", "")),
    ]  # fmt: skip
    if "images_per_s_ray_2_workers" in f:
        out.append(
            _row(s, "Ray, 2 workers: images/s", f["images_per_s_ray_2_workers"],
                 "plain loop images/s", plain)
        )  # fmt: skip
    if "images_per_s_minimal_torch_loop" in f:
        out.append(
            _row(s, "Ray, 1 worker: images/s (bf16, channels_last)",
                 f.get("images_per_s_ray_1_worker"), "minimal torch loop images/s",
                 f["images_per_s_minimal_torch_loop"])
        )  # fmt: skip
    out.append(
        _row(s, "fixed cost of a Ray run (s)", f.get("fixed_cost_s_ray_run"),
             "of a plain run (s)", f.get("fixed_cost_s_plain_run"),
             f"Ray start {f.get('ray_init_s', 0):.1f} s, once")
    )  # fmt: skip
    if "sweep_2_runs_1_epoch_wall_s" in f:
        loops = 2 * f["sweep_2_runs_loop_s_mean"]
        out.append(
            _row(s, "sweep of 2 one-epoch runs: wall (s)", f["sweep_2_runs_1_epoch_wall_s"],
                 "its runs' loop seconds", loops, "fixed cost of a sweep")
        )  # fmt: skip
    if "sweep_5_optimizers_x_2_seeds_digits_wall_s" in f:
        out.append(
            _row(s, "5 optimizers x 2 seeds, digits: wall (s)",
                 f["sweep_5_optimizers_x_2_seeds_digits_wall_s"], "its runs' loop seconds",
                 f.get("sweep_5x2_loop_s_sum"), f"{f.get('sweep_5x2_completed')}/10 completed")
        )  # fmt: skip
    return out


def _data(f: dict[str, Any]) -> list[Row]:
    s, memory = "data", f.get("throughput_memory_images_per_s")
    n = f.get("images", {})
    out = [
        _row(s, "stride data pack: PNG folder images/s", f.get("pack_images_per_s"),
             "one core decoding images/s", f.get("decode_images_per_s_one_core"),
             f"{n.get('pack_pngs')} PNGs 32x32, one pass on Ray Data, written"),
        _row(s, "reference CNN streamed, local parquet: images/s",
             f.get("throughput_local_images_per_s"), "in memory images/s", memory,
             f"goal >= 0.9; {n.get('throughput')} images, 1 thread; the loop waited "
             f"{f.get('throughput_local_data_wait_share', 0):.1%} of its time for data"),
    ]  # fmt: skip
    if "throughput_s3_images_per_s" in f:
        out.append(
            _row(s, "reference CNN streamed, S3 (moto): images/s",
                 f["throughput_s3_images_per_s"], "in memory images/s", memory,
                 f"goal >= 0.8; waited {f.get('throughput_s3_data_wait_share', 0):.1%}")
        )  # fmt: skip
    for what in ("streamed", "memory"):
        if f"peak_rss_mb_{what}_4x" in f:
            out.append(
                _row(s, f"{what}: trainer peak RSS MB at 4x images",
                     f[f"peak_rss_mb_{what}_4x"], "at 1x images", f[f"peak_rss_mb_{what}_1x"],
                     f"{n.get('memory_1x')} vs 4x images of 3x32x32; private (anon) at the end "
                     f"{f.get(f'rss_anon_mb_{what}_4x', 0):.0f} vs "
                     f"{f.get(f'rss_anon_mb_{what}_1x', 0):.0f} MB" + (
                         "; goal <= 1.1" if what == "streamed" else ""))
            )  # fmt: skip
    if "large_peak_rss_mb_trainer" in f:
        out.append(
            _row(s, f"{n.get('large'):,} images streamed: trainer peak RSS MB",
                 f["large_peak_rss_mb_trainer"], "1.5 GB budget", 1536.0,
                 f"at the end private {f.get('large_rss_anon_mb_trainer_end', 0):.0f} MB + "
                 f"object store pages {f.get('large_rss_shmem_mb_trainer_end', 0):.0f} MB; "
                 f"Ray workers max {f['large_peak_rss_mb_ray_workers_max']:.0f} MB, object "
                 f"store peak {f['large_object_store_peak_mb']:.0f} MiB, epoch "
                 f"{f['large_epoch_s']:.0f} s")
        )  # fmt: skip
    if "accuracy_mean_difference" in f:
        streamed, memory_acc = f["accuracy_streamed"], f["accuracy_memory"]
        out.append(
            _row(s, "digits streamed: test accuracy (mean)", sum(streamed) / len(streamed),
                 "in memory", sum(memory_acc) / len(memory_acc),
                 f"difference {f['accuracy_mean_difference']:+.4f} (goal within 0.01), "
                 f"{len(streamed)} seeds")
        )  # fmt: skip
    return out


def _served(model: str, sweep: dict[str, Any], refs: dict[Any, float] | None = None) -> list[Row]:
    s, base = "serving", sweep["in_process"]
    out = []
    for c, run in sweep["served"].items():
        ref = run.get("reference") if refs is None else refs[c]
        note = f"p50 {run['p50_us'] / 1000:.2f} ms, p99 {run['p99_us'] / 1000:.2f} ms"
        if not run.get("stable", 1):
            note += " (windows not stable)"
        out.append(
            _row(s, f"{model}: stride serve infer/s, concurrency {c}", run["throughput"],
                 f"in-process ORT, batch {base['best_batch']}", ref, note)
        )  # fmt: skip
    first = sweep["served"].get(1)
    if first is not None:
        compute = base["compute_b1_us"]
        for q in ("p50", "p99"):
            out.append(
                _row(s, f"{model}: {q} latency at concurrency 1 (us)", first[f"{q}_us"],
                     "in-process batch-1 compute (us)", compute,
                     f"overhead {first[f'{q}_us'] - compute:.0f} us")
            )  # fmt: skip
    return out


def _echo(echo: dict[str, Any]) -> Row:
    c = echo["concurrency"]
    return _row("serving", f"digits: stride serve req/s, concurrency {c}",
                echo["stride"]["throughput"], "minimal gRPC echo server req/s",
                echo["echo"]["throughput"])  # fmt: skip


def _serving(f: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    old = f.get("serving_py")
    if old is not None:  # bench/serving.py's figures (full mode)
        sweep = {"in_process": old["cnn_in_process"], "served": old["cnn_served"]}
        out += _served("cnn", sweep, old["cnn_reference"])
        stride, echo = old["digits_served"], old["echo_served"]
        out.append(_echo({"concurrency": 16, "stride": stride, "echo": echo}))
    for model in ("cnn", "digits"):
        if model in f:
            out += _served(model, f[model])
    if "echo" in f:
        out.append(_echo(f["echo"]))
    return out


def _startup(f: dict[str, Any]) -> list[Row]:
    ready, mem = f["ready"], f["memory"]
    models = ", ".join(ready["models"])
    return [
        _row("startup", f"stride serve start to READY (s), models {models}",
             ready["stride_ready_s"], "echo server start to READY (s)", ready["echo_ready_s"],
             f"median of {len(ready['runs']['stride'])}"),
        _row("startup", f"RSS per loaded model (MiB), {mem['model']} x{mem['copies']}",
             mem["server_mb_per_model"], "bare ORT session, same warm-up (MiB)",
             mem["bare_session_mb"], f"server empty {mem['server_rss_empty_mb']:.0f} MiB"),
    ]  # fmt: skip


def _peer(f: dict[str, Any]) -> list[Row]:
    if "skipped" in f:
        return [_row("peer", "KServe peer", None, "", None, f["skipped"])]
    out = []
    for run in f["runs"].values():
        ours, theirs = run["stride"], run["kserve"]
        note = (
            f"p50 {ours['p50_us'] / 1000:.2f} vs {theirs['p50_us'] / 1000:.2f} ms; "
            f"p99 {ours['p99_us'] / 1000:.2f} vs {theirs['p99_us'] / 1000:.2f} ms"
        )
        out.append(
            _row("peer", f"{run['model']}: stride serve req/s, concurrency {run['concurrency']}",
                 ours["throughput"], f"KServe {f['kserve_version']} req/s (same client)",
                 theirs["throughput"], note)
        )  # fmt: skip
    return out


def _versus(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    note = (
        f"p50 {ours['p50_us'] / 1000:.2f} vs {theirs['p50_us'] / 1000:.2f} ms; "
        f"p99 {ours['p99_us'] / 1000:.2f} vs {theirs['p99_us'] / 1000:.2f} ms"
    )
    if not (ours.get("stable", 1) and theirs.get("stable", 1)):
        note += " (windows not stable)"
    return note


def _triton(f: dict[str, Any]) -> list[Row]:
    if "skipped" in f:
        return [_row("triton", "real Triton", None, "", None, f["skipped"])]
    out = []
    triton = f"Triton ({f['triton_version']}) infer/s"
    for run in f["runs"].values():
        ours, theirs = run["stride"], run["triton"]
        where = f"{run['protocol']}, concurrency {run['concurrency']}"
        by_workers = run.get("stride_workers", {})
        first = next(iter(by_workers), None)
        label = "stride serve" if len(by_workers) < 2 else f"stride serve --workers {first}"
        out.append(
            _row("triton", f"{run['model']}: {label} infer/s, {where}", ours["throughput"],
                 triton, theirs["throughput"], _versus(ours, theirs))
        )  # fmt: skip
        for n, other in list(by_workers.items())[1:]:
            out.append(
                _row("triton", f"{run['model']}: stride serve --workers {n} infer/s, {where}",
                     other["throughput"], triton, theirs["throughput"], _versus(other, theirs))
            )  # fmt: skip
        echo = run.get("echo")
        if echo is not None:
            for n, mine in (by_workers or {"": ours}).items():
                flag = f" --workers {n}" if n != "" else ""
                out.append(
                    _row("triton", f"{run['model']}: stride serve{flag} infer/s, {where}",
                         mine["throughput"], "grpc.aio echo, no model (one process) infer/s",
                         echo["throughput"], _versus(mine, echo))
                )  # fmt: skip
            out.append(
                _row("triton", f"{run['model']}: grpc.aio echo, no model, infer/s, {where}",
                     echo["throughput"], triton, theirs["throughput"], _versus(echo, theirs))
            )  # fmt: skip
    return out


def _scaling(f: dict[str, Any]) -> list[Row]:
    out = []
    for model, figures in f["models"].items():
        medians = figures["median"]
        first = next(iter(medians))
        for n, runs in figures["runs"].items():
            each = ", ".join(f"{r['throughput']:,.0f}" for r in runs)
            server = sum(r["server_cores"] for r in runs) / len(runs)
            clients = sum(r["client_cores"] for r in runs) / len(runs)
            load = ", ".join(f"{r['load_average']:.1f}" for r in runs)
            note = f"runs {each}; server {server:.2f} cores, clients {clients:.2f}; load {load}"
            out.append(
                _row("scaling", f"{model}: --workers {n} infer/s, {f['connections']} connections",
                     medians[n], f"--workers {first} infer/s (medians)", medians[first], note)
            )  # fmt: skip
    return out


def _frontends(f: dict[str, Any]) -> list[Row]:
    from bench.frontends import LABELS

    if "skipped" in f:
        return [_row("frontends", "server models", None, "", None, f["skipped"])]
    runs = f["runs"]
    out = []
    for run in runs.values():
        c = run["concurrency"]
        base = runs.get(f"stride@{c}")
        if run["kind"] == "stride" or base is None:
            continue
        note = (
            f"p50 {run['p50_us'] / 1000:.2f} vs {base['p50_us'] / 1000:.2f} ms; server "
            f"{run['server_cores']:.2f} vs {base['server_cores']:.2f} cores"
        )
        out.append(
            _row("frontends", f"digits: {LABELS[run['kind']]} infer/s, concurrency {c}",
                 run["throughput"], "stride serve infer/s", base["throughput"], note)
        )  # fmt: skip
    return out


def _gpu(f: dict[str, Any]) -> list[Row]:
    if "skipped" in f:
        return [_row("gpu_inference", "CUDA inference", None, "", None, f["skipped"])]
    out = [
        _row("gpu_inference", f"cnn: in-process ORT CUDA images/s, batch {f['cuda_best_batch']}",
             f["cuda_best_rate"], f"in-process ORT CPU, batch {f['cpu_best_batch']}",
             f["cpu_best_rate"]),
    ]  # fmt: skip
    for c, run in f.get("served", {}).items():
        out.append(
            _row("gpu_inference", f"cnn: stride serve on CUDA infer/s, concurrency {c}",
                 run["throughput"], "in-process ORT CUDA, best batch", f["cuda_best_rate"],
                 f"p50 {run['p50_us'] / 1000:.2f} ms, p99 {run['p99_us'] / 1000:.2f} ms")
        )  # fmt: skip
    return out


BUILDERS = {
    "training": _training,
    "data": _data,
    "serving": _serving,
    "startup": _startup,
    "peer": _peer,
    "triton": _triton,
    "scaling": _scaling,
    "frontends": _frontends,
    "gpu_inference": _gpu,
}


def table(sections: dict[str, Any]) -> list[Row]:
    """Rows for every section that produced figures (a section that failed: one row saying so)."""
    out: list[Row] = []
    for name, section in sections.items():
        if "error" in section:
            out.append(_row(name, "FAILED", None, "", None, section["error"][:200]))
            continue
        try:
            out += BUILDERS[name](section["figures"])
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            out.append(_row(name, "figures incomplete", None, "", None, repr(exc)))
    return out


def fmt(value: float | None) -> str:
    """A figure as the tables print it: thousands grouped, three significant digits below 10."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render(doc: dict[str, Any]) -> str:
    """The table as text, with the machine and what produced it."""
    m = doc["machine"]
    head = (
        f"Stride bench ({doc['mode']}{', GPU' if doc['gpu'] else ''}) on {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gb']} GB"
        + (f", {'; '.join(m['gpus'])}" if m["gpus"] else "")
        + f"; load {m['load_average_start'][0]} -> {m['load_average_end'][0]}; "
        f"git {doc['git']['describe']}; {doc['duration_s']:.0f} s"
    )
    rows = doc["table"]
    wf = max([len(r["figure"]) for r in rows] + [6])
    wb = max([len(r["baseline"]) for r in rows] + [8])
    lines = [
        head,
        f"{'figure':<{wf}}  {'value':>9}  {'baseline':<{wb}}  {'base':>9}  {'ratio':>6}  note",
    ]
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines.append(f"-- {section}")
        lines.append(
            f"{r['figure']:<{wf}}  {fmt(r['value']):>9}  {r['baseline']:<{wb}}  "
            f"{fmt(r['baseline_value']):>9}  {fmt(r['ratio']):>6}  {r['note']}"
        )
    return "\n".join(lines)
