"""Run by test_client_compat.py with .venv-triton's Python: tritonclient's own clients.

Usage: python compat_triton_client.py GRPC_ADDRESS HTTP_ADDRESS. Calls `stride serve`
through `tritonclient.http`, `tritonclient.grpc` and `tritonclient.grpc.aio` as a Triton
user does, and prints one JSON line per check: {"check": "triton-grpc/model_config",
"result": {...}}. A client whose module cannot be imported reports one line
{"client": "triton-http", "unavailable": "..."} instead of its checks. Imports nothing
from Stride, so that tritonclient's generated protos are the only ones here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import queue
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

# The batch every inference check sends; the test computes the expected outputs from it.
X = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
MODEL = "digits"
TIMEOUT_S = 60
Result = dict[str, Any]


def emit(check: str, result: Result) -> None:
    print(json.dumps({"check": check, "result": result}), flush=True)


def _status(exc: InferenceServerException) -> str | int | None:
    """gRPC's code name ("NOT_FOUND") or HTTP's status (404); None for a stream's error."""
    status = exc.status()
    if status is None:
        return None
    status = str(status).removeprefix("StatusCode.")
    return int(status) if status.isdigit() else status


def _error(exc: InferenceServerException) -> Result:
    return {"status": _status(exc), "message": exc.message()}


async def run(check: str, call: Callable[[], Any]) -> None:
    try:
        result = call()
        if inspect.isawaitable(result):
            result = await result
    except InferenceServerException as exc:
        result = _error(exc)
    except Exception as exc:
        result = {"status": "client error", "error": f"{type(exc).__name__}: {exc}"}
    emit(check, result)


async def _get(value: Any) -> Any:
    """The value of a call of a sync or an asyncio client alike."""
    return await value if inspect.isawaitable(value) else value


def _json(client: Any) -> dict[str, Any]:
    """gRPC clients answer protobuf unless asked for JSON; HTTP clients answer JSON."""
    return {} if client.__module__.startswith("tritonclient.http") else {"as_json": True}


def _answer(result: Any) -> Result:
    """An InferResult as JSON: its id and each output's datatype, shape and values."""
    response = result.get_response(**_json_of_result(result))
    outputs = {}
    for meta in response["outputs"]:
        array = result.as_numpy(meta["name"])
        if array.dtype == object:
            data = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
            values: Any = np.array(data, dtype=object).reshape(array.shape).tolist()
        else:
            values = array.tolist()
        outputs[meta["name"]] = {
            "datatype": meta["datatype"],
            "shape": [int(d) for d in meta["shape"]],
            "data": values,
        }
    return {"status": "OK", "id": response.get("id", ""), "outputs": outputs}


def _json_of_result(result: Any) -> dict[str, Any]:
    return {} if type(result).__module__.startswith("tritonclient.http") else {"as_json": True}


def _tensors(meta: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [
        {"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t["shape"]]}
        for t in meta.get(key, [])
    ]


def _config(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ModelConfig a client relies on, with numbers as numbers."""

    def tensor(t: dict[str, Any]) -> dict[str, Any]:
        out = {"name": t["name"], "data_type": t["data_type"], "dims": [int(d) for d in t["dims"]]}
        if t.get("label_filename"):
            out["label_filename"] = t["label_filename"]
        return out

    return {
        "name": config["name"],
        "platform": config.get("platform", ""),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "input": [tensor(t) for t in config.get("input", [])],
        "output": [tensor(t) for t in config.get("output", [])],
        "dynamic_batching": "dynamic_batching" in config,
    }


def common_checks(client: Any, module: ModuleType) -> dict[str, Callable[[], Any]]:
    """The checks every tritonclient flavour runs: health, metadata, config, statistics,
    the repository index, inference, classification, errors and unimplemented extensions."""
    as_json = _json(client)
    is_http = not as_json

    def infer_input(x: np.ndarray = X, datatype: str = "FP32", binary: bool = True) -> Any:
        inp = module.InferInput("input", list(x.shape), datatype)
        if is_http:
            inp.set_data_from_numpy(x, binary_data=binary)
        else:
            inp.set_data_from_numpy(x)
        return inp

    async def infer(
        *inputs: Any, model: str = MODEL, outputs: Any = None, parameters: Any = None
    ) -> Result:
        result = await _get(client.infer(
            model, list(inputs), outputs=outputs, request_id="triton", parameters=parameters
        ))  # fmt: skip
        return _answer(result)

    async def value(call: Any, convert: Callable[[Any], Any] = lambda v: v) -> Result:
        return {"status": "OK", "value": convert(await _get(call))}

    async def status_only(call: Callable[[], Any]) -> Result:
        """For calls whose answer is the server's own business: did it answer OK?"""
        try:
            await _get(call())
        except InferenceServerException as exc:
            return {"status": _status(exc)}
        return {"status": "OK"}

    async def model_metadata(name: str) -> Result:
        meta = await _get(client.get_model_metadata(name, **as_json))
        return {"status": "OK", "value": {
            "name": meta["name"], "versions": list(meta.get("versions", [])),
            "platform": meta["platform"], "inputs": _tensors(meta, "inputs"),
            "outputs": _tensors(meta, "outputs"),
        }}  # fmt: skip

    async def model_config() -> Result:
        config = await _get(client.get_model_config(MODEL, **as_json))
        return {"status": "OK", "value": _config(config if is_http else config["config"])}

    async def load_unknown() -> Result:
        await _get(client.load_model("nope"))
        return {"status": "OK"}

    def index(answer: Any) -> list[list[str]]:
        models = answer if is_http else answer.get("models", [])
        return [[m["name"], m.get("version", ""), m.get("state", "")] for m in models]

    top3 = module.InferRequestedOutput("probabilities", class_count=3)
    checks: dict[str, Callable[[], Any]] = {
        "server_live": lambda: value(client.is_server_live()),
        "server_ready": lambda: value(client.is_server_ready()),
        "model_ready": lambda: value(client.is_model_ready(MODEL)),
        "model_ready_unknown": lambda: value(client.is_model_ready("nope")),
        "server_metadata": lambda: value(
            client.get_server_metadata(**as_json),
            lambda m: {
                "name": m["name"],
                "version": m["version"],
                "extensions": list(m.get("extensions", [])),
            },
        ),
        "model_metadata": lambda: model_metadata(MODEL),
        "model_metadata_unknown": lambda: model_metadata("nope"),
        "model_config": model_config,
        "statistics": lambda: value(
            client.get_inference_statistics(MODEL, **as_json),
            lambda s: [[m["name"], m["version"]] for m in s["model_stats"]],
        ),
        "repository_index": lambda: value(client.get_model_repository_index(**as_json), index),
        "infer": lambda: infer(infer_input()),
        "request_parameter": lambda: infer(infer_input(), parameters={"custom_tag": "compat"}),
        "classification": lambda: infer(infer_input(), outputs=[top3]),
        "unknown_model": lambda: infer(infer_input(), model="nope"),
        "bad_shape": lambda: infer(infer_input(np.zeros((2, 1, 8, 9), np.float32))),
        "bad_dtype": lambda: infer(infer_input(X.astype(np.float64), "FP64")),
        "load_unknown": load_unknown,
        "shm_status": lambda: status_only(client.get_system_shared_memory_status),
        "trace_settings": lambda: status_only(client.get_trace_settings),
        "log_settings": lambda: status_only(client.get_log_settings),
    }
    if is_http:
        json_outputs = [
            module.InferRequestedOutput("logits", binary_data=False),
            module.InferRequestedOutput("probabilities", binary_data=False),
        ]
        checks["infer_json"] = lambda: infer(infer_input(binary=False), outputs=json_outputs)
    return checks


def stream_checks(client: Any, module: ModuleType) -> dict[str, Callable[[], Any]]:
    """ModelStreamInfer through tritonclient.grpc's callback API: answers in order, an
    error for an unknown model with the stream going on, then a stream cancelled while
    requests are in flight."""

    def inputs() -> list[Any]:
        inp = module.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        return [inp]

    def answers() -> Result:
        got: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        try:
            client.async_stream_infer(MODEL, inputs(), request_id="s1")
            client.async_stream_infer("nope", inputs(), request_id="s2")
            top3 = [module.InferRequestedOutput("probabilities", class_count=3)]
            client.async_stream_infer(MODEL, inputs(), request_id="s3", outputs=top3)
            seen = [got.get(timeout=TIMEOUT_S) for _ in range(3)]
        finally:
            client.stop_stream()
        return {"status": "OK", "answers": [_stream_answer(r, e) for r, e in seen]}

    def cancelled() -> Result:
        got: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        client.async_stream_infer(MODEL, inputs(), request_id="c1")
        first = _stream_answer(*got.get(timeout=TIMEOUT_S))
        for k in range(2, 6):
            client.async_stream_infer(MODEL, inputs(), request_id=f"c{k}")
        client.stop_stream(cancel_requests=True)
        return {"status": "OK", "first": first["id"], "live_after": client.is_server_live()}

    return {"stream": answers, "stream_cancelled": cancelled}


def _stream_answer(result: Any, error: Any) -> Result:
    if error is not None:
        return {"error": error.message()}
    return _answer(result)


def aio_stream_checks(client: Any, module: ModuleType) -> dict[str, Callable[[], Any]]:
    """ModelStreamInfer through tritonclient.grpc.aio's `stream_infer`: answers in order,
    then a client that stops reading after the first answer while it still sends."""

    def request(request_id: str, model: str = MODEL) -> dict[str, Any]:
        inp = module.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        return {"model_name": model, "inputs": [inp], "request_id": request_id}

    async def answers() -> Result:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            for rid, model in (("a1", MODEL), ("a2", "nope"), ("a3", MODEL)):
                yield request(rid, model)

        seen = []
        stream = client.stream_infer(requests(), stream_timeout=TIMEOUT_S)
        async for result, error in stream:
            seen.append(_stream_answer(result, error))
            if len(seen) == 3:
                break
        return {"status": "OK", "answers": seen}

    async def stop_reading() -> Result:
        more = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield request("r1")
            for k in range(2, 6):  # sent while the client no longer reads
                await more.wait()
                yield request(f"r{k}")

        stream = client.stream_infer(requests(), stream_timeout=TIMEOUT_S)
        first = None
        async for result, error in stream:
            first = _stream_answer(result, error)
            more.set()
            break
        stream.cancel()
        live = await client.is_server_live()
        return {"status": "OK", "first": first and first["id"], "live_after": live}

    return {"stream": answers, "stream_stop_reading": stop_reading}


async def flavour(name: str, address: str) -> None:
    """Every check of one tritonclient flavour, each on the same client."""
    try:
        if name == "triton-http":
            import tritonclient.http as module
        elif name == "triton-grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.grpc.aio as module
    except ImportError as exc:  # e.g. tritonclient[http]'s geventhttpclient not installed
        print(json.dumps({"client": name, "unavailable": f"{type(exc).__name__}: {exc}"}))
        return
    if name == "triton-http":
        client = module.InferenceServerClient(
            address, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
        )
    else:
        client = module.InferenceServerClient(address)
    checks = common_checks(client, module)
    if name == "triton-grpc":
        checks.update(stream_checks(client, module))
    if name == "triton-grpc-aio":
        checks.update(aio_stream_checks(client, module))
    try:
        for check, call in checks.items():
            await run(f"{name}/{check}", call)
    finally:
        closed = client.close()
        if isinstance(closed, Awaitable):
            await closed


async def main(grpc_address: str, http_address: str) -> None:
    await flavour("triton-http", http_address)
    await flavour("triton-grpc", grpc_address)
    await flavour("triton-grpc-aio", grpc_address)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
