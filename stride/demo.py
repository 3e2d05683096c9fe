"""`stride demo`: the whole pipeline on one machine, on the bundled digits.

1. a local Ray instance trains the five course optimizers x two seeds (a sweep);
2. the best run is exported into the model repository;
3. `stride serve` and `stride serve-analysis` start as child processes;
4. held-out test images are classified over gRPC (PNG bytes, top-3);
5. the analysis service compares the optimizers and renders the picture;
6. both services get SIGTERM and must exit 0.

Each run uses a fresh experiment name, so a second demo never trips over the first.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runstore import StoreLocation

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


@dataclass(frozen=True)
class DemoOptions:
    config: Path  # absolute, like every path below: children and Ray start elsewhere
    runs: StoreLocation
    repository: Path
    picture: Path
    seeds: int = 2
    images: int = 8
    epochs: int | None = None  # None: the config's


def say(step: str, text: str) -> None:
    print(f"[demo {step}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_sweep(opts: DemoOptions, experiment: str) -> tuple[Any, list[Any]]:
    """The optimizer sweep on a local Ray instance (Ray Tune); returns (best run, all runs)."""
    from pipeline.config import read_config_file
    from pipeline.ray_train import ensure_ray
    from pipeline.search import build_plan, parse_grid
    from pipeline.sweep import concurrency, prepare, run_sweep
    from pipeline.sweep_results import SweepView, best_run

    overrides = ["training.progress=false"]
    if opts.epochs:
        overrides.append(f"training.epochs={opts.epochs}")
    plan = build_plan(parse_grid([f"optimizer.name={','.join(OPTIMIZERS)}"]), seeds=opts.seeds)
    # every config error surfaces here, before Ray starts
    sweep = prepare(read_config_file(opts.config), overrides, plan)
    resources = ensure_ray()
    limit = concurrency(sweep.variants, resources)
    say(
        "1/6",
        f"sweep: {len(OPTIMIZERS)} optimizers x {opts.seeds} seeds = {plan.trials} runs on "
        f"Ray Tune ({resources.get('CPU', 0):g} CPUs, up to {limit} at a time) into "
        f"{opts.runs.child(experiment)}",
    )
    runs = run_sweep(
        sweep,
        store=opts.runs,
        experiment=experiment,
        max_concurrent=limit,
        view=SweepView([], stream=sys.stdout, every=20.0),
    )
    best = best_run(runs)
    if best is None:
        raise RuntimeError("every run of the sweep failed; see the lines above")
    return best, runs


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`stride ARGS` as a child process, its output in `log` (a pipe nobody reads could
    fill up and stall the server)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stride.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


class Services:
    """`stride serve` and `stride serve-analysis` as child processes on free ports."""

    def __init__(self, repository: Path, runs: StoreLocation) -> None:
        # Every port a free one: REST's default, 8000, is often taken (another
        # `stride serve`, a web server under development).
        self.infer_port, self.http_port, self.metrics_port, self.analysis_port = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        )
        local = ["--host", "127.0.0.1", "--grace-period", "5"]
        tmp = Path(tempfile.gettempdir())
        self.logs = {
            n: tmp / f"stride-demo-{n}-{os.getpid()}.log" for n in ("inference", "analysis")
        }
        inference = ["serve", "--repository", str(repository), "--port", str(self.infer_port)]
        inference += ["--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port)]
        inference += local
        analysis = [
            "serve-analysis",
            "--runs",
            runs.uri,
            "--port",
            str(self.analysis_port),
            *local,
        ]
        self.procs = {
            "inference": _spawn(inference, self.logs["inference"]),
            "analysis": _spawn(analysis, self.logs["analysis"]),
        }

    def wait_ready(self, model: str, timeout: float = 90.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        for name, port, service in (
            ("inference", self.infer_port, model),
            ("analysis", self.analysis_port, ""),
        ):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    self._check_alive(name)
                    try:
                        reply = stub.Check(
                            health_pb2.HealthCheckRequest(service=service), timeout=2
                        )
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {name} server was not ready after {timeout:.0f}s")
                    time.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            err = self.logs[name].read_text(errors="replace")
            raise RuntimeError(
                f"the {name} server exited with {proc.returncode}: {err.strip()[-800:]}"
            )

    def stop(self) -> dict[str, int]:
        """SIGTERM both, wait for the drain, return their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def _png(image: Any, scale: float) -> bytes:
    """One (1, H, W) uint8 image of the data set's range as an 8-bit PNG."""
    import numpy as np
    from PIL import Image

    pixels = np.clip(image[0].numpy().astype(np.float64) * (255.0 / scale), 0, 255).round()
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def classify(cfg: Any, services: Services, model: str, count: int) -> tuple[int, int]:
    """Send held-out test images as PNG bytes; print label, top-3 and whether it was right."""
    import grpc

    from pipeline.data import load_splits
    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.tensors import decode_bytes_elements, encode_bytes_elements

    splits = load_splits(cfg.data)
    names = splits.info.class_names
    images = [_png(splits.test.images[i], splits.scale) for i in range(count)]
    truth = [int(splits.test.labels[i]) for i in range(count)]
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(encode_bytes_elements(images))
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    with grpc.insecure_channel(f"127.0.0.1:{services.infer_port}") as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    items = decode_bytes_elements(response.raw_output_contents[0], "classification")
    right = 0
    for n in range(count):
        top = [item.decode().split(":", 2) for item in items[n * 3 : (n + 1) * 3]]
        predicted = int(top[0][1])
        right += predicted == truth[n]
        shown = ", ".join(f"{label} {float(p):.3f}" for p, _, label in top)
        mark = "right" if predicted == truth[n] else "WRONG"
        print(f"  test image {n}: true {names[truth[n]]}  top-3 {shown}  {mark}")
    say(
        "4/6",
        f"{right}/{count} right (model {response.model_name} version "
        f"{response.model_version}, images sent as PNG bytes, preprocessed by the server)",
    )
    return right, count


def compare(services: Services, experiment: str, picture: Path) -> None:
    """The optimizer comparison and its picture, both from the analysis service."""
    import grpc

    from services.generated.stride.analysis.v1 import analysis_pb2 as apb
    from services.generated.stride.analysis.v1 import analysis_pb2_grpc as apb_grpc

    selection = apb.RunSelection(experiment=experiment, group_by="optimizer.name")
    with grpc.insecure_channel(f"127.0.0.1:{services.analysis_port}") as channel:
        stub = apb_grpc.AnalysisServiceStub(channel)
        result = stub.CompareRuns(
            apb.CompareRunsRequest(selection=selection, target=0.95), timeout=120
        )
        png = stub.RenderComparison(apb.RenderComparisonRequest(selection=selection), timeout=120)
    print(format_comparison(result))
    picture.parent.mkdir(parents=True, exist_ok=True)
    picture.write_bytes(png.png)
    say("5/6", f"comparison picture ({png.width}x{png.height}) written to {picture}")


def _stat(stat: Any, digits: int = 4, ci: bool = False) -> str:
    if not stat.HasField("mean"):
        return "-"
    spread = f" ±{stat.std:.{digits}f}" if stat.HasField("std") else ""
    if ci and stat.interval and stat.HasField("ci_low") and stat.HasField("ci_high"):
        spread += f" [{stat.ci_low:.{digits}f}, {stat.ci_high:.{digits}f}]"
    return f"{stat.mean:.{digits}f}{spread}"


def format_comparison(result: Any) -> str:
    """CompareRunsResponse as a table: one row per optimizer, best first."""
    from pipeline.tables import format_table

    header = (
        "rank",
        "optimizer",
        "runs",
        "test acc",
        "epochs to 95% val",
        "reached",
        "seconds to 95%",
        "final val acc",
    )
    rows = [
        (
            str(i),
            g.name,
            str(len(g.runs)),
            _stat(g.test_accuracy, ci=True),
            _stat(g.epochs_to_target, 1, ci=True),
            f"{g.reached_target}/{len(g.runs)}",
            _stat(g.seconds_to_target, 1),
            _stat(g.final_val_accuracy),
        )
        for i, g in enumerate(result.groups, 1)
    ]
    from services.analysis.report import interval_name

    diverged = sum(g.diverged for g in result.groups)
    note = f"; {diverged} diverged, counted at chance accuracy" if diverged else ""
    interval = interval_name(result.interval, result.confidence) if result.interval else ""
    return (
        f"{format_table(header, rows)}\n(mean ± sample std over seeds [{interval}; none for "
        f"one seed]; ranked by {result.rank_by}; a run that never reaches the target counts "
        f"its budget of epochs{note})"
    )


def run_demo(opts: DemoOptions) -> int:
    """The whole pipeline; returns the exit status."""
    from pipeline.config import load_config
    from pipeline.export import export_run
    from runstore import RunDir

    start = time.perf_counter()
    experiment = "demo-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    cfg = load_config(opts.config)
    best, _ = train_sweep(opts, experiment)
    say(
        "2/6",
        f"best run by validation accuracy {best.run_id}: val accuracy "
        f"{best.summary.val_accuracy:.4f}, test accuracy {best.summary.test_accuracy:.4f}",
    )
    exported = export_run(RunDir.at(opts.runs, experiment, best.run_id), opts.repository)
    model = exported.model_dir.name
    say(
        "2/6",
        f"exported {exported.path} (version {exported.version}; ONNX Runtime vs PyTorch "
        f"max abs diff {exported.max_abs_diff:.1e})",
    )
    say("3/6", "starting the inference and analysis servers")
    services = Services(opts.repository, opts.runs)
    try:
        services.wait_ready(model)
        say(
            "3/6",
            f"inference on 127.0.0.1:{services.infer_port} (metrics :{services.metrics_port}),"
            f" analysis on 127.0.0.1:{services.analysis_port}",
        )
        say("4/6", f"classifying {opts.images} held-out test images over gRPC")
        classify(cfg, services, model, opts.images)
        say("5/6", "comparing the optimizers (analysis service)")
        compare(services, experiment, opts.picture)
    finally:
        codes = services.stop()
    clean = all(code == 0 for code in codes.values())
    say("6/6", "servers stopped " + ("cleanly" if clean else f"with exit codes {codes}"))
    print(f"runs:       {opts.runs.child(experiment)}")
    print(f"model:      {exported.path}")
    print(f"picture:    {opts.picture}")
    print(f"demo done in {time.perf_counter() - start:.0f}s")
    return 0 if clean else 1
