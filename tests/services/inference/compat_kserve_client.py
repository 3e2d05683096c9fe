"""Run by test_client_compat.py with .venv-kserve's Python: KServe 0.21's own clients.

Usage: python compat_kserve_client.py GRPC_ADDRESS HTTP_URL. Calls `stride serve` through
`kserve.InferenceRESTClient` (protocol v2) and `kserve.InferenceGRPCClient` the way a KServe
user does (numpy arrays through `InferInput.set_data_from_numpy`, `RequestedOutput`), and
prints one JSON line per check: {"check": "kserve-rest/server_live", "result": {...}}
(or, without kserve, {"client": "kserve-rest", "unavailable": "..."} per client).
Metadata has no call in those clients; it is read over their transports and parsed with
KServe's own data models (`kserve.protocol.rest.v2_datamodels`, its generated gRPC stub).
Imports nothing from Stride, so that KServe's generated protos are the only ones here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

try:
    import grpc
    import httpx
    from google.protobuf import json_format
    from kserve import (
        InferenceGRPCClient,
        InferenceRESTClient,
        InferInput,
        InferRequest,
        RESTConfig,
    )
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import RequestedOutput
    from kserve.protocol.rest import v2_datamodels as models
except ImportError as exc:  # a venv whose install failed half-way
    UNAVAILABLE: str | None = f"{type(exc).__name__}: {exc}"
else:
    UNAVAILABLE = None

# The batch every inference check sends; the test computes the expected outputs from it.
X = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
MODEL = "digits"
Result = dict[str, Any]


def emit(check: str, result: Result) -> None:
    print(json.dumps({"check": check, "result": result}), flush=True)


async def run(check: str, call: Callable[[], Awaitable[Result]]) -> None:
    """Run one check; a server error becomes its status and message, anything else the
    client raised becomes a "client error"."""
    try:
        result = await call()
    except grpc.aio.AioRpcError as exc:
        result = {"status": exc.code().name, "message": exc.details()}
    except httpx.HTTPStatusError as exc:
        result = {"status": exc.response.status_code, "message": _error_text(exc.response)}
    except Exception as exc:
        result = {"status": "client error", "error": f"{type(exc).__name__}: {exc}"}
    emit(check, result)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text


def _ok(value: Any) -> Result:
    return {"status": "OK", "value": value}


def _input(
    x: np.ndarray, datatype: str = "FP32", binary: bool = True, **parameters: Any
) -> InferInput:
    inp = InferInput("input", list(x.shape), datatype, parameters=parameters or None)
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def _answer(response: Any) -> Result:
    """An InferResponse as JSON: its id and each output's datatype, shape and values."""
    outputs = {}
    for out in response.outputs:
        array = out.as_numpy()
        if array.dtype == object or array.dtype.kind in "SU":
            data = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
            values: Any = np.array(data, dtype=object).reshape(array.shape).tolist()
        else:
            values = array.tolist()
        outputs[out.name] = {"datatype": out.datatype, "shape": list(out.shape), "data": values}
    return {"status": "OK", "id": response.id, "outputs": outputs}


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Model metadata with tensor shapes as numbers (gRPC's JSON writes int64 as strings)."""
    tensors = {
        key: [
            {"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t["shape"]]}
            for t in meta.get(key, [])
        ]
        for key in ("inputs", "outputs")
    }
    return {
        "name": meta["name"],
        "versions": list(meta.get("versions") or []),
        "platform": meta["platform"],
        **tensors,
    }


async def rest_checks(url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    plain = httpx.AsyncClient(base_url=url, timeout=60)

    async def infer(
        *inputs: InferInput, model: str = MODEL, outputs: Any = None, **parameters: Any
    ) -> Result:
        request = InferRequest(
            model, list(inputs), request_id="kserve-rest", request_outputs=outputs,
            parameters=parameters or None,
        )  # fmt: skip
        return _answer(await client.infer(url, request, model_name=model))

    async def parsed(path: str, model: Any) -> Any:
        """GET `path`, parsed by KServe's data model of that answer."""
        response = await plain.get(path)
        response.raise_for_status()
        return model.model_validate(response.json()).model_dump()

    checks: dict[str, Callable[[], Awaitable[Result]]] = {
        "server_live": lambda: _value(client.is_server_live(url)),
        "server_ready": lambda: _value(client.is_server_ready(url)),
        "model_ready": lambda: _value(client.is_model_ready(url, MODEL)),
        "model_ready_unknown": lambda: _value(client.is_model_ready(url, "nope")),
        "model_ready_body": lambda: _value(
            parsed(f"/v2/models/{MODEL}/ready", models.ModelReadyResponse)
        ),
        "server_metadata": lambda: _value(parsed("/v2", models.ServerMetadataResponse)),
        "model_metadata": lambda: _value(
            parsed(f"/v2/models/{MODEL}", models.ModelMetadataResponse), _metadata
        ),
        "model_metadata_unknown": lambda: _value(
            parsed("/v2/models/nope", models.ModelMetadataResponse), _metadata
        ),
        "infer_binary": lambda: infer(_input(X)),
        "infer_json": lambda: infer(_input(X, binary=False)),
        "infer_binary_outputs": lambda: infer(_input(X), binary_data_output=True),
        "codec_hint": lambda: infer(_input(X, binary=False, content_type="np")),
        "request_parameter": lambda: infer(_input(X), custom_tag="compat-suite"),
        "classification": lambda: infer(
            _input(X), outputs=[RequestedOutput("probabilities", {"classification": 3})]
        ),
        "unknown_model": lambda: infer(_input(X), model="nope"),
        "bad_shape": lambda: infer(_input(np.zeros((2, 1, 8, 9), np.float32))),
        "bad_dtype": lambda: infer(_input(X.astype(np.float64), "FP64")),
    }
    try:
        for name, call in checks.items():
            await run(f"kserve-rest/{name}", call)
    finally:
        await client.close()
        await plain.aclose()


async def _value(call: Awaitable[Any], convert: Callable[[Any], Any] = lambda v: v) -> Result:
    return _ok(convert(await call))


async def grpc_checks(address: str) -> None:
    client = InferenceGRPCClient(address, retries=0, timeout=60)
    stub = client._client_stub  # KServe's generated stub on the client's own channel

    async def infer(
        *inputs: InferInput, model: str = MODEL, outputs: Any = None, **parameters: Any
    ) -> Result:
        request = InferRequest(
            model, list(inputs), request_id="kserve-grpc", request_outputs=outputs,
            parameters=parameters or None,
        )  # fmt: skip
        return _answer(await client.infer(request))

    async def server_metadata() -> Result:
        reply = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=60)
        return _ok(
            {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}
        )

    async def model_metadata(name: str) -> Result:
        reply = await stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=60)
        return _ok(_metadata(json_format.MessageToDict(reply, preserving_proto_field_name=True)))

    # binary=False: typed contents, so that only infer_binary depends on raw inputs' parameters
    checks: dict[str, Callable[[], Awaitable[Result]]] = {
        "server_live": lambda: _value(client.is_server_live()),
        "server_ready": lambda: _value(client.is_server_ready()),
        "model_ready": lambda: _value(client.is_model_ready(MODEL)),
        "model_ready_unknown": lambda: _value(client.is_model_ready("nope")),
        "server_metadata": server_metadata,
        "model_metadata": lambda: model_metadata(MODEL),
        "model_metadata_unknown": lambda: model_metadata("nope"),
        "infer_binary": lambda: infer(_input(X)),
        "infer_typed": lambda: infer(_input(X, binary=False)),
        "codec_hint": lambda: infer(_input(X, binary=False, content_type="np")),
        "request_parameter": lambda: infer(_input(X, binary=False), custom_tag="compat-suite"),
        "classification": lambda: infer(
            _input(X, binary=False),
            outputs=[RequestedOutput("probabilities", {"classification": 3})],
        ),
        "unknown_model": lambda: infer(_input(X, binary=False), model="nope"),
        "bad_shape": lambda: infer(_input(np.zeros((2, 1, 8, 9), np.float32), binary=False)),
        "bad_dtype": lambda: infer(_input(X.astype(np.float64), "FP64", binary=False)),
    }
    try:
        for name, call in checks.items():
            await run(f"kserve-grpc/{name}", call)
    finally:
        await client.close()


async def main(grpc_address: str, http_url: str) -> None:
    if UNAVAILABLE is not None:
        for client in ("kserve-rest", "kserve-grpc"):
            print(json.dumps({"client": client, "unavailable": UNAVAILABLE}))
        return
    # KServe's clients log every failed call with its traceback; the checks record the errors.
    logging.getLogger("kserve.trace").setLevel(logging.CRITICAL)
    await rest_checks(http_url)
    await grpc_checks(grpc_address)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
