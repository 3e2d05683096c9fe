"""What each check of the client-compatibility suite expects, and how an answer is compared.

A check's expectation is the answer its client needs: for tritonclient, what Triton 2.51
answers to the same call; for KServe's clients, what the Open Inference Protocol's text
defines; for gRPC's health client, the `grpc.health.v1` specification. Values that
describe the server itself (its name and version, its extensions, the model's platform)
are Stride's own, as the protocol leaves them to the server. Where Stride answers
otherwise on purpose, docs/serving.md ("Client compatibility") says so in a table that
test_client_compat.py reads.

The client scripts (compat_kserve_client.py, compat_triton_client.py) send the batch `X`
to the test repository's `digits` model (tests/services/inference/onnx_models.py, version
1, seed 1); the expected outputs are computed here from the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.services.inference.onnx_models import LABELS, expected

X = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
LOGITS, PROBS = expected(X, seed=1)

# Triton 2.51's ServerMetadata extensions; a server may list any of them.
TRITON_EXTENSIONS = frozenset({
    "classification", "sequence", "model_repository", "model_repository(unload_dependents)",
    "schedule_policy", "model_configuration", "system_shared_memory", "cuda_shared_memory",
    "binary_tensor_data", "parameters", "statistics", "trace", "logging",
})  # fmt: skip
# The extensions Triton's and KServe's clients use against this server.
NEEDED_EXTENSIONS = frozenset({
    "classification", "model_repository", "model_configuration", "statistics",
    "binary_tensor_data",
})  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What the comparison needs to know of this run: strings no answer may carry."""

    server_paths: tuple[str, ...]


class Matcher:
    """An expectation that is not one exact value; `why_not` says why a value fails it."""

    def why_not(self, value: Any, ctx: Context) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Close(Matcher):
    """Numbers of the given shape within `atol` of the reference."""

    reference: tuple[tuple[float, ...], ...]
    atol: float

    def why_not(self, value: Any, ctx: Context) -> str | None:
        try:
            got = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return f"not numbers: {value!r}"
        ref = np.asarray(self.reference)
        if got.shape != ref.shape:
            return f"shape {got.shape}, expected {ref.shape}"
        worst = float(np.max(np.abs(got - ref)))
        return None if worst <= self.atol else f"off by {worst:.3g} (> {self.atol})"


def close(array: np.ndarray, atol: float) -> Close:
    return Close(tuple(tuple(float(v) for v in row) for row in array), atol)


@dataclass(frozen=True)
class TopK(Matcher):
    """Triton's classification strings "<score>:<index>:<label>", best first, per row."""

    probabilities: tuple[tuple[float, ...], ...]
    k: int

    def why_not(self, value: Any, ctx: Context) -> str | None:
        if not isinstance(value, list) or len(value) != len(self.probabilities):
            return f"expected {len(self.probabilities)} rows, got {value!r}"
        for row, probs in zip(value, self.probabilities, strict=True):
            best = sorted(range(len(probs)), key=lambda i: -probs[i])[: self.k]
            want = [f"{probs[i]:f}:{i}:{LABELS[i]}" for i in best]
            if not isinstance(row, list) or len(row) != self.k:
                return f"row {row!r}, expected {want}"
            for item, ref in zip(row, want, strict=True):
                score, _, rest = str(item).partition(":")
                ref_score, _, ref_rest = ref.partition(":")
                if rest != ref_rest or abs(float(score) - float(ref_score)) > 1e-5:
                    return f"row {row!r}, expected {want}"
        return None


def top_k(probabilities: np.ndarray, k: int) -> TopK:
    return TopK(tuple(tuple(float(v) for v in row) for row in probabilities), k)


@dataclass(frozen=True)
class Says(Matcher):
    """An error message that names `words` and carries no path of the server's machine."""

    words: tuple[str, ...]

    def why_not(self, value: Any, ctx: Context) -> str | None:
        if not isinstance(value, str):
            return f"not a message: {value!r}"
        missing = [w for w in self.words if w not in value]
        if missing:
            return f"{value!r} does not name {missing}"
        leaked = [p for p in ctx.server_paths if p in value]
        if leaked:
            return f"{value!r} carries the server's path {leaked[0]!r}"
        return None


@dataclass(frozen=True)
class Text(Matcher):
    """Any non-empty string."""

    def why_not(self, value: Any, ctx: Context) -> str | None:
        return None if isinstance(value, str) and value else f"not a non-empty string: {value!r}"


@dataclass(frozen=True)
class Extensions(Matcher):
    """A ServerMetadata extension list: the ones clients need, nothing Triton does not name."""

    def why_not(self, value: Any, ctx: Context) -> str | None:
        if not isinstance(value, list):
            return f"not a list: {value!r}"
        missing, unknown = NEEDED_EXTENSIONS - set(value), set(value) - TRITON_EXTENSIONS
        if missing or unknown:
            return f"missing {sorted(missing)}, not Triton's {sorted(unknown)}"
        return None


def _error(http: bool, grpc_code: str, http_status: int, *words: str) -> dict[str, Any]:
    return {"status": http_status if http else grpc_code, "message": Says(words)}


def _outputs(request_id: str) -> dict[str, Any]:
    return {"status": "OK", "id": request_id, "outputs": {
        "logits": {"datatype": "FP32", "shape": [2, 10], "data": close(LOGITS, 1e-4)},
        "probabilities": {"datatype": "FP32", "shape": [2, 10], "data": close(PROBS, 1e-5)},
    }}  # fmt: skip


def _classes(request_id: str) -> dict[str, Any]:
    return {"status": "OK", "id": request_id, "outputs": {
        "probabilities": {"datatype": "BYTES", "shape": [2, 3], "data": top_k(PROBS, 3)},
    }}  # fmt: skip


OK_TRUE = {"status": "OK", "value": True}
OK_FALSE = {"status": "OK", "value": False}
SERVER_METADATA = {
    "status": "OK",
    "value": {"name": "stride", "version": Text(), "extensions": Extensions()},
}
MODEL_METADATA = {"status": "OK", "value": {
    "name": "digits", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ],
}}  # fmt: skip
MODEL_CONFIG = {"status": "OK", "value": {
    "name": "digits", "platform": "onnxruntime_onnx", "max_batch_size": 8,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 8, 8]}],
    "output": [
        {"name": "logits", "data_type": "TYPE_FP32", "dims": [10]},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10],
         "label_filename": "labels.txt"},
    ],
    "dynamic_batching": True,
}}  # fmt: skip


def kserve_checks(protocol: str) -> dict[str, dict[str, Any]]:
    """kserve.InferenceRESTClient (protocol "rest") or InferenceGRPCClient ("grpc")."""
    http = protocol == "rest"
    rid = f"kserve-{protocol}"
    checks: dict[str, dict[str, Any]] = {
        "server_live": OK_TRUE,
        "server_ready": OK_TRUE,
        "model_ready": OK_TRUE,
        "model_ready_unknown": OK_FALSE,
        "server_metadata": SERVER_METADATA,
        "model_metadata": MODEL_METADATA,
        "model_metadata_unknown": _error(http, "NOT_FOUND", 404, "nope"),
        "infer_binary": _outputs(rid),
        "infer_json" if http else "infer_typed": _outputs(rid),
        "codec_hint": _outputs(rid),
        "request_parameter": _outputs(rid),
        "classification": _classes(rid),
        "unknown_model": _error(http, "NOT_FOUND", 404, "nope"),
        "bad_shape": _error(http, "INVALID_ARGUMENT", 400, "input"),
        "bad_dtype": _error(http, "INVALID_ARGUMENT", 400, "FP64"),
    }
    if http:
        checks["infer_binary_outputs"] = _outputs(rid)
        # The protocol's REST text: {"name": $string, "ready": $bool}.
        checks["model_ready_body"] = {"status": "OK", "value": {"name": "digits", "ready": True}}
    return {f"kserve-{protocol}/{name}": want for name, want in checks.items()}


def triton_checks(flavour: str) -> dict[str, dict[str, Any]]:
    """tritonclient.http ("http"), tritonclient.grpc ("grpc") or tritonclient.grpc.aio."""
    http = flavour == "http"
    checks: dict[str, dict[str, Any]] = {
        "server_live": OK_TRUE,
        "server_ready": OK_TRUE,
        "model_ready": OK_TRUE,
        "model_ready_unknown": OK_FALSE,
        "server_metadata": SERVER_METADATA,
        "model_metadata": MODEL_METADATA,
        "model_metadata_unknown": _error(http, "NOT_FOUND", 404, "nope"),
        "model_config": MODEL_CONFIG,
        "statistics": {"status": "OK", "value": [["digits", "1"]]},
        "repository_index": {"status": "OK", "value": [["digits", "1", "READY"]]},
        "infer": _outputs("triton"),
        "request_parameter": _outputs("triton"),
        "classification": _classes("triton"),
        "unknown_model": _error(http, "NOT_FOUND", 404, "nope"),
        "bad_shape": _error(http, "INVALID_ARGUMENT", 400, "input"),
        "bad_dtype": _error(http, "INVALID_ARGUMENT", 400, "FP64"),
        # Triton fails to poll a model that is not there: INTERNAL.
        "load_unknown": _error(http, "INTERNAL", 500, "nope"),
        "shm_status": {"status": "OK"},
        "trace_settings": {"status": "OK"},
        "log_settings": {"status": "OK"},
    }
    if http:
        checks["infer_json"] = _outputs("triton")
    stream_error = {"error": Says(("nope",))}
    if flavour == "grpc":
        checks["stream"] = {"status": "OK", "answers": [
            _outputs("s1"), stream_error, _classes("s3"),
        ]}  # fmt: skip
        checks["stream_cancelled"] = {"status": "OK", "first": "c1", "live_after": True}
    if flavour == "grpc-aio":
        checks["stream"] = {"status": "OK", "answers": [
            _outputs("a1"), stream_error, _outputs("a3"),
        ]}  # fmt: skip
        checks["stream_stop_reading"] = {"status": "OK", "first": "r1", "live_after": True}
    return {f"triton-{flavour}/{name}": want for name, want in checks.items()}


def health_checks() -> dict[str, dict[str, Any]]:
    """grpc.health.v1 through grpcio-health-checking's stub (the pytest process's own)."""
    serving = {"status": "OK", "value": "SERVING"}
    return {
        "grpc-health/check_server": serving,
        "grpc-health/check_service": serving,
        "grpc-health/check_model": serving,
        "grpc-health/check_unknown": {"status": "NOT_FOUND"},
        "grpc-health/list": {
            "status": "OK",
            "value": {
                "": "SERVING",
                "inference.GRPCInferenceService": "SERVING",
                "digits": "SERVING",
            },
        },
    }


def all_checks() -> dict[str, dict[str, Any]]:
    """Every check of the suite by its id ("<client>/<check>"), with what it expects."""
    checks: dict[str, dict[str, Any]] = {}
    for protocol in ("rest", "grpc"):
        checks.update(kserve_checks(protocol))
    for flavour in ("http", "grpc", "grpc-aio"):
        checks.update(triton_checks(flavour))
    checks.update(health_checks())
    return checks


def differences(observed: Any, want: Any, ctx: Context, where: str = "") -> list[str]:
    """Where `observed` differs from `want`: one line per differing leaf, with its path."""
    if isinstance(want, Matcher):
        why = want.why_not(observed, ctx)
        return [] if why is None else [f"{where}: {why}"]
    if isinstance(want, dict) and isinstance(observed, dict):
        out = []
        for key in sorted(set(want) | set(observed)):
            path = f"{where}.{key}" if where else str(key)
            if key not in observed:
                out.append(f"{path}: missing, expected {want[key]!r}")
            elif key not in want:
                out.append(f"{path}: unexpected {observed[key]!r}")
            else:
                out += differences(observed[key], want[key], ctx, path)
        return out
    if isinstance(want, list) and isinstance(observed, list) and len(want) == len(observed):
        return [
            d
            for i, (o, w) in enumerate(zip(observed, want, strict=True))
            for d in differences(o, w, ctx, f"{where}[{i}]")
        ]
    if type(observed) is type(want) and observed == want:
        return []
    return [f"{where}: {observed!r}, expected {want!r}"]
