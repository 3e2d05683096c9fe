"""Translation between the REST protocol's JSON (and binary tensor data) and the core's
`InferRequest` / `InferResult`: what `protocol` is for gRPC.

An infer request body is JSON, or, with Triton's binary tensor data extension, JSON
of `Inference-Header-Content-Length` bytes followed by the raw bytes of the inputs
whose parameters give `binary_data_size`, in the order of the inputs. Outputs go back
as JSON `data`, or as raw bytes after the JSON when the output's `binary_data`
parameter (or the request's `binary_data_output`) asks for it.

Every count is checked before anything is built from it: the JSON header's size by
the front end, each input's element count against its shape before its values are
converted, BYTES counts against --max-bytes-elements.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from services.common.errors import InvalidInput
from services.generated.inference import model_config_pb2 as mc
from services.inference.core import ModelInfo, ModelStatistics, ServerInfo
from services.inference.protocol import (
    INPUT_PARAMETERS,
    ParameterCounts,
    check_bytes_count,
    check_parameters,
    ignored_counter,
    output_requests,
    raw_input,
    timeout_from,
)
from services.inference.repository import IndexEntry
from services.inference.stats import Duration
from services.inference.tensors import (
    BYTES,
    NUMPY_DTYPES,
    InferRequest,
    InferResult,
    InputTensor,
    OutputTensor,
    check_shape,
    element_count,
    encode_bytes_elements,
)

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"  # input parameter: its bytes follow the JSON
BINARY_OUTPUT = "binary_data"  # output parameter: answer it as bytes after the JSON
BINARY_OUTPUTS = "binary_data_output"  # request parameter: every output as bytes


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _flatten(data: Any, limit: int, what: str) -> list[Any]:
    """Nested JSON arrays in row-major order; stops past `limit` elements."""
    flat: list[Any] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
            if len(flat) > limit:
                raise InvalidInput(f"{what}: 'data' holds more elements than its shape's {limit}")
        else:
            stack.pop()
    return flat


def _json_input(
    name: str, datatype: str, shape: tuple[int, ...], data: Any, max_bytes: int
) -> InputTensor:
    what = f"input {name!r}"
    check_shape(shape, what)
    if datatype == BYTES:
        count = check_bytes_count(shape, what, max_bytes)
    else:
        if datatype not in NUMPY_DTYPES:
            raise InvalidInput(
                f"{what}: unknown datatype {datatype!r}; expected one of "
                f"{', '.join([*NUMPY_DTYPES, BYTES])}"
            )
        count = element_count(shape)
    flat = _flatten(data, count, what)
    if len(flat) != count:
        raise InvalidInput(
            f"{what}: 'data' holds {len(flat)} elements but shape {list(shape)} needs {count}"
        )
    if datatype == BYTES:
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"{what}: BYTES 'data' must be strings (or use binary data)")
        try:
            items = [v.encode() for v in flat]
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"{what}: BYTES 'data' holds a string that is not Unicode text (a lone "
                f"surrogate {exc.object[exc.start : exc.end]!r}); send such bytes as binary data"
            ) from None
        return InputTensor(name, datatype, shape, items)
    kinds = (bool,) if datatype == "BOOL" else (int, float)
    if not all(isinstance(v, kinds) for v in flat) or (
        datatype != "BOOL" and any(isinstance(v, bool) for v in flat)
    ):
        raise InvalidInput(f"{what}: 'data' must hold {datatype} values (JSON numbers)")
    try:
        array = np.asarray(flat, dtype=NUMPY_DTYPES[datatype]).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(f"{what}: 'data' does not fit {datatype}: {exc}") from None
    return InputTensor(name, datatype, shape, array)


def _shape(value: Any, what: str) -> tuple[int, ...]:
    dims = _list(value, f"{what}: 'shape'")
    if len(dims) > 64 or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise InvalidInput(f"{what}: 'shape' must be a list of at most 64 integers")
    return tuple(dims)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Parse UTF-8 JSON; every way it can be malformed (not UTF-8, not JSON, nested past
    Python's recursion limit, an integer of more digits than Python converts) is an
    InvalidInput naming the problem."""
    try:
        text = str(data, "utf-8")
        return json.loads(text[1:] if text.startswith("\ufeff") else text)  # a BOM: no harm
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the request is not valid UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(
            "the request's JSON nests arrays or objects too deeply (a tensor has at most 64 "
            "dimensions)"
        ) from None
    except ValueError as exc:  # int(): more digits than sys.get_int_max_str_digits()
        raise InvalidInput(
            f"the request is not valid JSON: a number is out of range ({exc})"
        ) from None


def parse_json_object(body: bytes | bytearray) -> dict[str, Any]:
    """A request body that must be a JSON object (or empty: {})."""
    if not body.strip():
        return {}
    value = loads(body)
    if not isinstance(value, dict):
        raise InvalidInput("the request must be a JSON object")
    return value


def parse_header(
    body: bytes | bytearray, header_length: str | None
) -> tuple[dict[str, Any], memoryview]:
    """Split an infer body into its JSON object and the binary data after it (a view of
    `body`, not a copy)."""
    view = memoryview(body).toreadonly()
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} must be a byte count "
                f"within the body's {len(body)} bytes"
            )
    header = loads(view[:size])
    return _object(header, "the request"), view[size:]


def request_from_json(
    model: str,
    version: str,
    header: dict[str, Any],
    binary: memoryview,
    max_bytes_elements: int,
    counts: ParameterCounts | None = None,
) -> tuple[InferRequest, bool]:
    """Decode an infer request; returns it and whether outputs default to binary.

    Parameters follow the shared policy (services.inference.protocol): unknown keys are
    ignored and counted in `counts`, shared memory and sequences refused.
    """
    parameters = dict(_object(header.get("parameters"), "'parameters'"))
    binary_default = bool(parameters.pop(BINARY_OUTPUTS, False))
    timeout_us = timeout_from(parameters, ignored_counter(counts, "request", "http"))
    inputs = _list(header.get("inputs"), "'inputs'")
    if not inputs:
        raise InvalidInput("request has no inputs")
    if len(inputs) > 1024:
        raise InvalidInput("a request has at most 1024 inputs")
    outputs = None
    if "outputs" in header:
        items = []
        for out in _list(header["outputs"], "'outputs'")[:1025]:
            out = _object(out, "each output")
            params = dict(_object(out.get("parameters"), "an output's 'parameters'"))
            params.pop(BINARY_OUTPUT, None)
            items.append((str(out.get("name", "")), params))
        outputs = (
            output_requests(items, ignored_counter(counts, "output", "http")) if items else None
        )
    decoded, offset = [], 0
    for item in inputs:
        item = _object(item, "each input")
        name, datatype = str(item.get("name", "")), str(item.get("datatype", ""))
        shape = _shape(item.get("shape"), f"input {name!r}")
        params = _object(item.get("parameters"), f"input {name!r}: 'parameters'")
        unknown = check_parameters(params, INPUT_PARAMETERS, f"input {name!r}")
        if unknown and counts is not None:
            counts.add("http", "input", unknown)
        if BINARY_SIZE in params:
            size = params[BINARY_SIZE]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: {BINARY_SIZE} must be a byte count")
            if "data" in item:
                raise InvalidInput(f"input {name!r}: give 'data' or {BINARY_SIZE}, not both")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: {BINARY_SIZE} {size} runs past the {len(binary)} bytes "
                    "of binary data after the JSON"
                )
            raw = binary[offset : offset + size]  # a view: the arrays are read in place
            offset += size
            decoded.append(raw_input(name, datatype, shape, raw, max_bytes_elements))
        elif "data" in item:
            decoded.append(_json_input(name, datatype, shape, item["data"], max_bytes_elements))
        else:
            raise InvalidInput(f"input {name!r}: neither 'data' nor {BINARY_SIZE} given")
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data after the JSON belong to no input"
        )
    request = InferRequest(
        model=model,
        version=version,
        inputs=decoded,
        outputs=outputs,
        id=str(header.get("id", "")),
        timeout_us=timeout_us,
    )
    return request, binary_default


def binary_outputs(header: dict[str, Any], default: bool) -> set[str]:
    """Names of the outputs to answer as binary data."""
    chosen = set()
    for out in header.get("outputs") or []:
        params = out.get("parameters") or {}
        if params.get(BINARY_OUTPUT, default):
            chosen.add(str(out.get("name", "")))
    return chosen


def _json_data(out: OutputTensor) -> list[Any]:
    if isinstance(out.data, list):
        return [item.decode("utf-8", "replace") for item in out.data]
    return out.data.reshape(-1).tolist()


def response_to_json(
    result: InferResult, binary: set[str] | None, default: bool
) -> tuple[bytes, list[bytes | memoryview]]:
    """The answer's JSON and the binary chunks that follow it (empty: a JSON-only answer);
    a numeric output's chunk is a view of its array, not a copy.

    `binary` names the outputs sent as bytes; None means every output uses `default`.
    """
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for out in result.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        as_binary = default if binary is None else out.name in binary
        if as_binary:
            raw: bytes | memoryview
            if isinstance(out.data, list):
                raw = encode_bytes_elements(out.data)
            else:
                raw = np.ascontiguousarray(out.data).data.cast("B")  # a view, not a copy
            entry["parameters"] = {BINARY_SIZE: len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(out)
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if result.id:
        answer["id"] = result.id
    answer["outputs"] = outputs
    return json.dumps(answer, separators=(",", ":")).encode(), chunks


# The other endpoints' answers ------------------------------------------------------


def server_metadata(info: ServerInfo) -> dict[str, Any]:
    return {"name": info.name, "version": info.version, "extensions": list(info.extensions)}


def model_metadata(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "versions": info.versions,
        "platform": info.platform,
        "inputs": [asdict(t) for t in info.inputs],
        "outputs": [asdict(t) for t in info.outputs],
    }


def model_config(config: mc.ModelConfig) -> dict[str, Any]:
    """The config as Triton's REST answer has it: field names as in the proto, every field
    (defaults too), 64-bit integers as JSON numbers rather than protobuf's strings."""
    from google.protobuf import json_format
    from google.protobuf.descriptor import FieldDescriptor

    def numbers(message: Any, value: Any) -> Any:
        # json_format writes int64 as strings; Triton writes numbers.
        for field in message.DESCRIPTOR.fields:
            key = field.name
            if key not in value:
                continue
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                if field.is_repeated:
                    for sub, item in zip(getattr(message, key), value[key], strict=False):
                        numbers(sub, item)
                else:
                    numbers(getattr(message, key), value[key])
            elif field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64):
                v = value[key]
                value[key] = [int(x) for x in v] if isinstance(v, list) else int(v)
        return value

    value = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return numbers(config, value)


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def statistics(entries: list[ModelStatistics]) -> dict[str, Any]:
    stats = []
    for entry in entries:
        s = entry.snapshot
        stats.append(
            {
                "name": entry.name,
                "version": entry.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _duration(s.success),
                    "fail": _duration(s.fail),
                    "queue": _duration(s.queue),
                    "compute_input": _duration(s.compute_input),
                    "compute_infer": _duration(s.compute_infer),
                    "compute_output": _duration(s.compute_output),
                    "cache_hit": _duration(Duration()),  # no response cache
                    "cache_miss": _duration(Duration()),
                },
                "response_stats": {},
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": _duration(b.compute_input),
                        "compute_infer": _duration(b.compute_infer),
                        "compute_output": _duration(b.compute_output),
                    }
                    for size, b in s.batches.items()
                ],
                "memory_usage": [],
            }
        )
    return {"model_stats": stats}


def index(entries: list[IndexEntry]) -> list[dict[str, str]]:
    out = []
    for e in entries:
        item = {"name": e.name}
        if e.version:
            item["version"] = e.version
        item["state"] = e.state
        if e.reason:
            item["reason"] = e.reason
        out.append(item)
    return out
