"""The fuzz targets: one function per input path, shared by atheris (fuzz/fuzz_*.py) and
hypothesis (tests/fuzz).

A target feeds one input to the real code and lets through only the documented
errors: a `ServiceError` for the services (each maps to a status code in
services.common.status; anything else would answer INTERNAL), a `ConfigError`
for run configs. Any other exception propagates, and that is a finding. Where
a call succeeds, the target checks what the answer must satisfy (a response
that serialises, an image of the model's shape, a config that round-trips, a
name that stays inside its folder).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuzz.workspace import CONTEXT, workspace
from runstore import BadName
from services.common.errors import FailedPrecondition, InvalidInput, ServiceError
from services.common.status import status_for
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2 as apb

# Which typed-contents field each datatype uses, and the Python type of its values.
CONTENTS = {
    "bool_contents": bool,
    "int_contents": int,
    "int64_contents": int,
    "uint_contents": int,
    "uint64_contents": int,
    "fp32_contents": float,
    "fp64_contents": float,
    "bytes_contents": bytes,
}
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip
MODELS = ("digits", "nobatch", "rgb")
OUTPUTS = ("logits", "probabilities")
REQUEST_PARAMETERS = ("timeout", "priority", "sequence_id", "sequence_start", "sequence_end")


def _answer_all(calls: list[Callable[[], object]]) -> None:
    """Make each call; a domain error (one the status table maps) is an answer, anything
    else propagates."""
    for call in calls:
        try:
            call()
        except Exception as exc:
            if not status_for(exc)[2]:
                raise


# ---------------------------------------------------------------- inference requests


@dataclass
class Tensor:
    """One request input; `raw` goes to raw_input_contents, `contents` to typed contents."""

    name: str = "input"
    datatype: str = "FP32"
    shape: tuple[int, ...] = ()
    raw: bytes | None = None
    contents: tuple[str, list[Any]] | None = None  # (field of InferTensorContents, values)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferCase:
    """A ModelInferRequest as plain values (what the hypothesis strategies draw)."""

    model: str = "digits"
    version: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    extra_raw: int = 0  # > 0: that many surplus raw entries; < 0: drop some


def set_parameter(param: pb.InferParameter, value: Any) -> None:
    """Put a Python value into the InferParameter field of its type."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            param.int64_param = value
        else:
            param.uint64_param = value % 2**64
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def build_request(case: InferCase) -> pb.ModelInferRequest:
    """The ModelInferRequest a client would send for `case`."""
    request = pb.ModelInferRequest(model_name=case.model, model_version=case.version, id=case.id)
    raw = any(t.raw is not None for t in case.inputs)
    for t in case.inputs:
        tensor = request.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        for key, value in t.parameters.items():
            set_parameter(tensor.parameters[key], value)
        if t.contents is not None:
            name, values = t.contents
            getattr(tensor.contents, name).extend(values)
        if raw:
            request.raw_input_contents.append(t.raw or b"")
    if case.extra_raw > 0:
        request.raw_input_contents.extend([b"\0" * 4] * case.extra_raw)
    elif case.extra_raw < 0 and request.raw_input_contents:
        del request.raw_input_contents[case.extra_raw :]
    for name, params in case.outputs:
        out = request.outputs.add(name=name)
        for key, value in params.items():
            set_parameter(out.parameters[key], value)
    for key, value in case.parameters.items():
        set_parameter(request.parameters[key], value)
    return request


def check_infer_request(request: pb.ModelInferRequest) -> None:
    """ModelInfer through the servicer in-process: served, or refused with a domain error."""
    try:
        # ModelInfer is a coroutine of the server's event loop; here, one loop per call.
        response = asyncio.run(workspace().servicer.ModelInfer(request, CONTEXT))
    except ServiceError:
        return
    assert len(response.raw_output_contents) == len(response.outputs), response
    response.SerializeToString()


def check_infer(case: InferCase) -> None:
    """`check_infer_request` for a request given as plain values."""
    check_infer_request(build_request(case))


# ---------------------------------------------------------------- encoded images


def check_image(data: bytes, channels: int = 1, height: int = 8, width: int = 8) -> None:
    """Decode image bytes the way the server does for a model of that input shape."""
    from services.inference.preprocess import Preprocess

    pre = Preprocess(channels, height, width, (0.5,) * channels, (0.25,) * channels)
    try:
        array = pre.image_to_array(data)
    except InvalidInput:
        return
    assert array.shape == pre.shape and array.dtype == np.float32, array.shape
    assert np.isfinite(array).all()


# ---------------------------------------------------------------- names and versions


def _stays_inside(name: str, check: Callable[[str], object], root: Path) -> None:
    try:
        check(name)
    except (ServiceError, BadName):
        return
    target = os.path.normpath(os.path.join(root, name))
    assert os.path.dirname(target) == os.path.normpath(root), f"{name!r} leaves {root}"


def check_names(name: str, version: str) -> None:
    """Model names and versions through every RPC that takes them; run-store names likewise."""
    from runstore import check_read_name as check_name
    from services.inference.config import check_model_name

    ws = workspace()
    s, n, a = ws.servicer, ws.names_servicer, ws.analysis
    calls: list[Callable[[], object]] = [
        lambda: s.ModelReady(pb.ModelReadyRequest(name=name, version=version), CONTEXT),
        lambda: s.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version), CONTEXT),
        lambda: s.ModelConfig(pb.ModelConfigRequest(name=name, version=version), CONTEXT),
        lambda: s.ModelStatistics(pb.ModelStatisticsRequest(name=name, version=version), CONTEXT),
        lambda: n.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name), CONTEXT),
        lambda: n.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name), CONTEXT),
        lambda: a.GetRun(apb.GetRunRequest(experiment=name, run_id=version), CONTEXT),
        lambda: a.ListRuns(apb.ListRunsRequest(experiment=name), CONTEXT),
    ]
    _answer_all(calls)
    _stays_inside(name, check_model_name, ws.repo)
    _stays_inside(name, lambda x: check_name("experiment", x), ws.runs)
    _stays_inside(version, lambda x: check_name("run id", x), ws.runs / "fz")


# ---------------------------------------------------------------- config.pbtxt


def check_config_pbtxt(text: bytes) -> None:
    """A config.pbtxt next to a working model: it loads, or the load fails with a reason.

    A model that loads then answers a request of its configured shape (served or
    refused with a domain error).
    """
    from services.inference.tensors import NUMPY_DTYPES, InferRequest, InputTensor

    ws = workspace()
    (ws.config_repo / "m" / "config.pbtxt").write_bytes(text)
    repository = ws.config_repository
    try:
        repository.load("m")
    except FailedPrecondition:
        return
    model = repository.get("m")
    inputs = []
    for spec in model.settings.inputs:
        dims = [1 if d == -1 else d for d in spec.dims]
        shape = (1, *dims) if model.settings.max_batch_size else tuple(dims)
        dtype = NUMPY_DTYPES.get(spec.datatype, np.dtype(np.float32))
        inputs.append(InputTensor(spec.name, spec.datatype, shape, np.zeros(shape, dtype)))
    _answer_all([lambda: repository.infer(InferRequest("m", "", inputs))])


# ---------------------------------------------------------------- run configs


def check_run_config(text: bytes, overrides: list[str]) -> None:
    """A YAML run config plus `--set` overrides, as `stride train` reads them.

    Valid configs must round-trip: the resolved dict parses back to the same config
    (sweeps and Ray workers pass configs around as dicts).
    """
    from pipeline.config import ConfigError, load_config, parse_config

    path = workspace().root / "run.yaml"
    path.write_bytes(text)
    try:
        cfg = load_config(path, overrides)
    except ConfigError:
        return
    assert parse_config(cfg.to_dict()) == cfg


# ---------------------------------------------------------------- run store


RUN_ID = "fuzz-s1-0001"


def _put(folder: Path, name: str, data: bytes | None) -> None:
    path = folder / name
    if data is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(data)


def check_run_store(config: bytes | None, metrics: bytes | None, summary: bytes | None) -> None:
    """A run's files as the analysis service reads them: scans never raise, RPCs map errors."""
    ws = workspace()
    folder = ws.runs / "fz" / RUN_ID
    folder.mkdir(parents=True, exist_ok=True)
    _put(folder, "config.json", config)
    _put(folder, "metrics.jsonl", metrics)
    _put(folder, "summary.json", summary)
    a = ws.analysis
    a.store.scan("fz")  # documented: malformed runs are listed, never raised
    a.ListExperiments(apb.ListExperimentsRequest(), CONTEXT)
    selection = apb.RunSelection(experiment="fz", group_by="optimizer.name")
    everything = apb.RunSelection(experiment="fz", group_by="seed", include_unfinished=True)
    calls: list[Callable[[], object]] = [
        lambda: a.ListRuns(apb.ListRunsRequest(experiment="fz"), CONTEXT),
        lambda: a.GetRun(apb.GetRunRequest(experiment="fz", run_id=RUN_ID), CONTEXT),
        lambda: a.GradientFlow(apb.GradientFlowRequest(selection=everything), CONTEXT),
    ]
    for sel in (selection, everything):
        request = apb.CompareRunsRequest(selection=sel, target=0.6)
        calls.append(functools.partial(a.CompareRuns, request, CONTEXT))
    _answer_all(calls)
