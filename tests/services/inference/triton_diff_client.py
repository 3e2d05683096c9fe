"""Run by the conformance test with .venv-pytriton's Python: the same requests to a server
over gRPC and HTTP, every answer written down as JSON for the test to diff.

Usage: python triton_diff_client.py GRPC_URL HTTP_URL. Imports nothing from Stride,
so that tritonclient's generated protos are the only `inference` protos here. Normal
calls go through tritonclient's own API (a Triton client must work unchanged); bad
requests are built by hand (protobuf over gRPC, urllib over HTTP), since
tritonclient refuses most of them before sending.
"""

from __future__ import annotations

import json
import queue
import sys
import urllib.error
import urllib.request
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

X = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 1, 8, 8)


def _answer(result: Any, response: dict[str, Any]) -> dict[str, Any]:
    """An infer answer as JSON: its id, and each output's datatype, shape and values."""
    out: dict[str, Any] = {"id": response.get("id", ""), "outputs": {}}
    for meta in response["outputs"]:
        array = result.as_numpy(meta["name"])
        values = (
            array.tolist()
            if array.dtype != object
            else [
                [v.decode() if isinstance(v, bytes) else str(v) for v in row]
                for row in array.reshape(len(array), -1)
            ]
        )
        out["outputs"][meta["name"]] = {
            "datatype": meta["datatype"],
            "shape": [int(d) for d in meta["shape"]],
            "data": values,
        }
    return out


def stream(url: str) -> dict[str, Any]:
    """ModelStreamInfer through tritonclient's stream API, one request at a time (an error
    comes back without its request's id): each answer, or that it was an error."""
    client = grpcclient.InferenceServerClient(url)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))

    def send(x: np.ndarray = X, model: str = "digits", version: str = "", rid: str = "",
             outputs: list[tuple[str, int]] | None = None) -> dict[str, Any]:  # fmt: skip
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        requested = None
        if outputs is not None:
            requested = [grpcclient.InferRequestedOutput(n, class_count=k) for n, k in outputs]
        client.async_stream_infer(model, [inp], model_version=version, outputs=requested,
                                  request_id=rid)  # fmt: skip
        result, error = answers.get(timeout=30)
        if error is not None:
            return {"error": True, "message": str(error)}
        return _answer(result, result.get_response(as_json=True))

    seen = {
        "first": send(rid="s1"),
        "top3": send(rid="s2", outputs=[("probabilities", 3)]),
        "unknown_model": send(model="nope"),
        "unknown_output": send(outputs=[("nope", 0)]),
        "batch_over_max": send(x=np.zeros((9, 1, 8, 8), np.float32)),
        "unknown_version": send(version="7"),
        "after_errors": send(x=X[:1], rid="s3"),
        "versioned_latest": send(model="versioned"),
        "versioned_2": send(model="versioned", version="2"),
        "versioned_1": send(model="versioned", version="1"),
    }
    client.stop_stream()
    return seen


def versions(client: Any, module: Any, protocol: str) -> dict[str, Any]:
    """A model with versions 1, 2 and 3 on disk and a policy that serves the latest two."""
    grpc_json = {"as_json": True} if protocol == "grpc" else {}
    seen: dict[str, Any] = {
        "metadata": client.get_model_metadata("versioned", **grpc_json),
        "ready": {v: client.is_model_ready("versioned", v) for v in ("", "1", "2", "3")},
        "metadata_1": _error(lambda: client.get_model_metadata("versioned", "1")),
    }

    def infer(version: str) -> dict[str, Any]:
        inp = module.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        result = client.infer("versioned", [inp], model_version=version)
        response = result.get_response(**grpc_json) if protocol == "grpc" else result.get_response()
        return {"model_version": response.get("model_version"), **_answer(result, response)}

    for version in ("", "2", "3"):
        seen[f"infer_{version or 'latest'}"] = infer(version)
    seen["infer_1"] = _error(lambda: infer("1"))
    return seen


def _error(call: Any) -> dict[str, Any]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message()}
    return {"status": "OK"}


def observe(client: Any, module: Any, protocol: str) -> dict[str, Any]:
    """Everything tritonclient's API shows of the server."""
    grpc_json = {"as_json": True} if protocol == "grpc" else {}
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server_metadata": client.get_server_metadata(**grpc_json),
        "model_metadata": client.get_model_metadata("digits", **grpc_json),
        "model_metadata_v1": client.get_model_metadata("digits", "1", **grpc_json),
        "model_config": client.get_model_config("digits", **grpc_json),
        "index": client.get_model_repository_index(**grpc_json),
        "ready_models": {
            "digits": client.is_model_ready("digits"),
            "digits/1": client.is_model_ready("digits", "1"),
            "digits/3": client.is_model_ready("digits", "3"),
            "nope": client.is_model_ready("nope"),
        },
    }
    if protocol == "grpc":  # tritonclient.grpc wraps the index; http answers a list
        seen["index"] = seen["index"].get("models", [])
    else:
        seen["model_config"] = {"config": seen["model_config"]}

    def infer(outputs: list[tuple[str, int, bool]] | None, x: np.ndarray = X, binary: bool = True,
              model: str = "digits", rid: str = "") -> dict[str, Any]:  # fmt: skip
        inp = module.InferInput("input", list(x.shape), "FP32")
        if protocol == "http":
            inp.set_data_from_numpy(x, binary_data=binary)
        else:
            inp.set_data_from_numpy(x)
        requested = None
        if outputs is not None:
            requested = []
            for name, k, as_binary in outputs:
                kw = {"binary_data": as_binary} if protocol == "http" else {}
                requested.append(module.InferRequestedOutput(name, class_count=k, **kw))
        result = client.infer(model, [inp], outputs=requested, request_id=rid)
        response = result.get_response(**grpc_json) if protocol == "grpc" else result.get_response()
        return _answer(result, response)

    seen["infer"] = {
        "all": infer(None, rid="diff-1"),
        "both": infer([("logits", 0, True), ("probabilities", 0, True)]),
        "logits_only": infer([("logits", 0, True)]),
        "json_in_json_out": infer([("probabilities", 0, False)], binary=False),
        "top3": infer([("probabilities", 3, True)]),
        "top3_json": infer([("probabilities", 3, False)], binary=False),
        "top20": infer([("probabilities", 20, True)]),
        "logits_top2": infer([("logits", 2, True)]),
        "ties": infer(
            [("probabilities", 4, True)], x=np.zeros((1, 1, 8, 8), np.float32), model="ties"
        ),
        "batch8": infer([("probabilities", 0, True)], x=np.ones((8, 1, 8, 8), np.float32)),
    }
    stats = client.get_inference_statistics("digits", **grpc_json)
    seen["statistics"] = stats
    seen["statistics_all"] = client.get_inference_statistics(**grpc_json)
    seen["errors"] = {
        "stats_unknown_model": _error(lambda: client.get_inference_statistics("nope")),
        "metadata_unknown_model": _error(lambda: client.get_model_metadata("nope")),
        "metadata_unknown_version": _error(lambda: client.get_model_metadata("digits", "3")),
        "config_unknown_model": _error(lambda: client.get_model_config("nope")),
        "infer_unknown_model": _error(lambda: infer(None, model="nope")),
        "infer_unknown_output": _error(lambda: infer([("nope", 0, True)])),
        "infer_batch_over_max": _error(lambda: infer(None, x=np.zeros((9, 1, 8, 8), np.float32))),
        "load_unknown_model": _error(lambda: client.load_model("nope")),
    }
    client.unload_model("spare")
    seen["spare_ready_after_unload"] = client.is_model_ready("spare")
    seen["errors"]["infer_unloaded_model"] = _error(lambda: infer(None, model="spare"))
    client.load_model("spare")
    seen["spare_ready_after_load"] = client.is_model_ready("spare")
    return seen


def _raw_request(shape: list[int], datatype: str = "FP32", size: int | None = None,
                 model: str = "digits", version: str = "") -> pb.ModelInferRequest:  # fmt: skip
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="input", datatype=datatype, shape=shape)
    count = int(np.prod(shape)) if shape else 1
    raw = np.zeros(count, np.float32).tobytes() if size is None else b"\0" * size
    request.raw_input_contents.append(raw)
    return request


def bad_grpc(url: str) -> dict[str, Any]:
    """Bad ModelInfer requests over gRPC: (status code, message) of each."""
    cases: dict[str, pb.ModelInferRequest] = {
        "wrong_dtype": _raw_request([1, 1, 8, 8], "INT32"),
        "unknown_dtype": _raw_request([1, 1, 8, 8], "FP99"),
        "wrong_shape": _raw_request([1, 1, 8, 7]),
        "wrong_rank": _raw_request([1, 64]),
        "short_bytes": _raw_request([1, 1, 8, 8], size=255),
        "long_bytes": _raw_request([1, 1, 8, 8], size=257),
        "unknown_model": _raw_request([1, 1, 8, 8], model="nope"),
        "unknown_version": _raw_request([1, 1, 8, 8], version="3"),
        "bad_version": _raw_request([1, 1, 8, 8], version="x"),
        "batch_over_max": _raw_request([9, 1, 8, 8]),
        "empty_batch": _raw_request([0, 1, 8, 8]),
        "negative_dim": _raw_request([-1, 1, 8, 8], size=256),
    }
    request = _raw_request([1, 1, 8, 8])
    request.inputs[0].name = "nope"
    cases["unknown_input"] = request
    request = _raw_request([1, 1, 8, 8])
    request.outputs.add(name="nope")
    cases["unknown_output"] = request
    cases["no_inputs"] = pb.ModelInferRequest(model_name="digits")
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    request.inputs[0].contents.fp32_contents.extend([0.0] * 63)
    cases["typed_short"] = request
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    request.inputs[0].contents.fp32_contents.extend([0.5] * 64)
    cases["typed_ok"] = request
    request = _raw_request([1, 1, 8, 8])
    request.raw_input_contents.append(b"")
    cases["extra_raw"] = request
    request = _raw_request([1, 1, 8, 8])
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    cases["classification_raw"] = request
    out: dict[str, Any] = {}
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name, request in cases.items():
            try:
                response = stub.ModelInfer(request, timeout=30)
                entry: dict[str, Any] = {"status": "OK", "outputs": []}
                for i, meta in enumerate(response.outputs):
                    raw = response.raw_output_contents[i] if response.raw_output_contents else b""
                    entry["outputs"].append(
                        {"name": meta.name, "datatype": meta.datatype,
                         "shape": list(meta.shape), "raw_bytes": len(raw)}
                    )  # fmt: skip
                out[name] = entry
            except grpc.RpcError as exc:
                out[name] = {"status": exc.code().name, "message": exc.details()}
    return out


def _post(url: str, body: bytes, headers: dict[str, str] | None = None,
          method: str = "POST") -> dict[str, Any]:  # fmt: skip
    request = urllib.request.Request(url, data=body if method == "POST" else None,
                                     headers=headers or {}, method=method)  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, text, head = reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        status, text, head = exc.code, exc.read(), dict(exc.headers)
    entry: dict[str, Any] = {"status": status}
    length = {k.lower(): v for k, v in head.items()}.get("inference-header-content-length")
    json_part = text[: int(length)] if length else text
    try:
        entry["body"] = json.loads(json_part) if json_part else None
    except ValueError:
        entry["body"] = json_part.decode("latin-1")
    if length:
        entry["binary_bytes"] = len(text) - int(length)
    return entry


def _tensor(shape: list[int], datatype: str = "FP32", data: Any = None) -> dict[str, Any]:
    count = int(np.prod(shape)) if shape else 1
    return {"name": "input", "shape": shape, "datatype": datatype,
            "data": [0.5] * count if data is None else data}  # fmt: skip


def bad_http(base: str) -> dict[str, Any]:
    """Bad REST requests (and a few good raw ones): HTTP status and body of each."""
    infer = f"{base}/v2/models/digits/infer"
    json_cases = {
        "wrong_dtype": {"inputs": [_tensor([1, 1, 8, 8], "INT32", [1] * 64)]},
        "unknown_dtype": {"inputs": [_tensor([1, 1, 8, 8], "FP99")]},
        "wrong_shape": {"inputs": [_tensor([1, 1, 8, 7])]},
        "data_count": {"inputs": [_tensor([1, 1, 8, 8], data=[0.5] * 63)]},
        "batch_over_max": {"inputs": [_tensor([9, 1, 8, 8])]},
        "empty_batch": {"inputs": [_tensor([0, 1, 8, 8])]},
        "unknown_input": {"inputs": [{**_tensor([1, 1, 8, 8]), "name": "nope"}]},
        "unknown_output": {"inputs": [_tensor([1, 1, 8, 8])], "outputs": [{"name": "nope"}]},
        "no_inputs": {"inputs": []},
        "nested_data": {"inputs": [_tensor([1, 1, 8, 8], data=[[[[0.5] * 8] * 8]])]},
        "classification": {
            "id": "r1",
            "inputs": [_tensor([2, 1, 8, 8])],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
        },
        "json_outputs": {"inputs": [_tensor([1, 1, 8, 8])]},
    }
    out: dict[str, Any] = {}
    for name, body in json_cases.items():
        out[name] = _post(infer, json.dumps(body).encode())
    out["not_json"] = _post(infer, b"{nope")
    out["unknown_model"] = _post(
        f"{base}/v2/models/nope/infer", json.dumps(json_cases["json_outputs"]).encode()
    )
    out["unknown_version"] = _post(f"{base}/v2/models/digits/versions/3/infer",
                                   json.dumps(json_cases["json_outputs"]).encode())  # fmt: skip
    binary_input = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": 256}}  # fmt: skip
    binary_output = {"name": "logits", "parameters": {"binary_data": True}}
    header = json.dumps({"inputs": [binary_input], "outputs": [binary_output]})
    for label, size in (("binary_ok", 256), ("binary_short", 255)):
        body = header.replace("256", str(size)).encode() + b"\0" * size
        hdr = {"Inference-Header-Content-Length": str(len(body) - size)}
        out[label] = _post(infer, body, hdr)
    bad_size = header.encode() + b"\0" * 200
    out["binary_missing_bytes"] = _post(
        infer, bad_size, {"Inference-Header-Content-Length": str(len(header))}
    )
    out["bytes_strings"] = _post(
        infer, json.dumps({"inputs": [_tensor([1], "BYTES", ["abc"])]}).encode()
    )
    for label, path, method in (
        ("get_infer", "/v2/models/digits/infer", "GET"),
        ("post_metadata", "/v2/models/digits", "POST"),
        ("unknown_path", "/v2/nope", "GET"),
        ("model_ready_unknown", "/v2/models/nope/ready", "GET"),
        ("model_ready_version", "/v2/models/digits/versions/3/ready", "GET"),
        ("model_ready", "/v2/models/digits/ready", "GET"),
        ("health_live", "/v2/health/live", "GET"),
        ("health_ready", "/v2/health/ready", "GET"),
        ("metadata_unknown", "/v2/models/nope", "GET"),
        ("config_unknown_version", "/v2/models/digits/versions/3/config", "GET"),
        ("stats_unknown", "/v2/models/nope/stats", "GET"),
        ("stats_version", "/v2/models/digits/versions/1/stats", "GET"),
    ):
        out[label] = _post(base + path, b"", method=method)
    out["index_ready"] = _post(f"{base}/v2/repository/index", b'{"ready": true}')
    out["index_bad_ready"] = _post(f"{base}/v2/repository/index", b'{"ready": 1}')
    out["load_unknown"] = _post(f"{base}/v2/repository/models/nope/load", b"")
    out["unload_unknown"] = _post(f"{base}/v2/repository/models/nope/unload", b"")
    return out


def main(grpc_url: str, http_url: str) -> None:
    seen = {
        "grpc": observe(grpcclient.InferenceServerClient(grpc_url), grpcclient, "grpc"),
        "http": observe(httpclient.InferenceServerClient(http_url), httpclient, "http"),
        "bad_grpc": bad_grpc(grpc_url),
        "bad_http": bad_http(f"http://{http_url}"),
        "stream": stream(grpc_url),
        "versions_grpc": versions(grpcclient.InferenceServerClient(grpc_url), grpcclient, "grpc"),
        "versions_http": versions(httpclient.InferenceServerClient(http_url), httpclient, "http"),
    }
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
