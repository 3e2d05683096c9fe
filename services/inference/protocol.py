"""Translation between the KServe v2 messages and the core's `InferRequest` / `InferResult`.

Inputs may come as `raw_input_contents` (one entry per input, in order) or as
typed `contents`; outputs always go back as `raw_output_contents`, which is
what Triton does and what tritonclient reads fastest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from services.common.errors import InvalidInput, shown
from services.generated.inference import grpc_service_pb2 as pb
from services.inference.tensors import (
    BYTES,
    DEFAULT_MAX_BYTES_ELEMENTS,
    NUMPY_DTYPES,
    InferRequest,
    InferResult,
    InputTensor,
    OutputRequest,
    array_from_raw,
    check_shape,
    decode_bytes_elements,
    element_count,
    encode_bytes_elements,
)

# Which typed-contents field carries each datatype (the specification's table).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# The parameters of the Open Inference Protocol and Triton's extensions, by where they
# appear. The protocol defines `parameters` as free key/value pairs, so a key Stride does
# not know is ignored (and counted: `ParameterCounts`), as KServe's and Triton's servers
# do; only keys whose meaning Stride cannot honour safely are refused (shared memory,
# sequences). Both front ends (gRPC here, REST in services.inference.rest) apply it.
#
# Request: `timeout` (microseconds) shortens the queue timeout; `priority` and
# `triton_enable_empty_final_response` change nothing here (no priority levels, no
# decoupled models); `binary_data_output` is the REST front end's. Sequence control is
# refused: no model here has sequence batching.
REQUEST_PARAMETERS = (
    "timeout",
    "priority",
    "triton_enable_empty_final_response",
    "binary_data_output",
)
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
# Input: `binary_data_size` is honoured by the REST front end (and sent, meaning nothing,
# by KServe's gRPC client); `content_type` is a codec hint of KServe and MLServer clients
# ("np", "str", ...), which the datatype already settles.
INPUT_PARAMETERS = ("binary_data_size", "content_type")
# Output: `classification` (k best classes); `binary_data` is the REST front end's.
OUTPUT_PARAMETERS = ("classification", "binary_data")
SHARED_MEMORY_PREFIX = "shared_memory_"


class ParameterCounts(Protocol):
    """Where ignored parameters are counted (services.common.counters.CallCounters)."""

    def add(self, protocol: str, where: str, count: int) -> None: ...


def _refuse_shared_memory(key: str, what: str) -> None:
    if key.startswith(SHARED_MEMORY_PREFIX):
        raise InvalidInput(
            f"{what}: parameter {shown(key)}: shared memory is not offered by this server "
            "(its extensions do not list it); send the tensor's data in the request"
        )


def check_parameters(keys: Iterable[str], known: tuple[str, ...], what: str) -> int:
    """Refuse the keys Stride cannot honour (shared memory); the number of unknown keys,
    which are ignored."""
    unknown = 0
    for key in keys:
        if key in known:
            continue
        _refuse_shared_memory(key, what)
        unknown += 1
    return unknown


def parameter_value(param: pb.InferParameter) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return getattr(param, choice) if choice else None


def _int_parameter(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer (int64_param), got {value!r}")
    return value


def check_bytes_count(shape: tuple[int, ...], what: str, limit: int) -> int:
    """The BYTES element count `shape` declares, refused past `limit` (--max-bytes-elements).

    Checked before a single element is split out: millions of empty elements cost a few
    bytes each on the wire but tens of bytes each as Python objects.
    """
    count = element_count(shape)
    if count > limit:
        raise InvalidInput(
            f"{what}: shape {list(shape)} declares {count} BYTES elements; at most {limit} "
            "are accepted in one input (--max-bytes-elements)"
        )
    return count


def raw_input(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, max_bytes: int
) -> InputTensor:
    """An input sent as raw little-endian bytes (gRPC raw_input_contents, or the binary
    tensor data of the REST protocol), checked against its shape."""
    what = f"input {shown(name)}"
    check_shape(shape, what)
    data: np.ndarray | list[bytes]
    if datatype == BYTES:
        count = check_bytes_count(shape, what, max_bytes)
        data = decode_bytes_elements(raw, what, count)
        if len(data) != count:
            raise InvalidInput(
                f"{what}: {len(data)} BYTES elements but shape {list(shape)} needs {count}"
            )
    else:
        data = array_from_raw(raw, datatype, shape, what)
    return InputTensor(name, datatype, shape, data)


def timeout_from(
    parameters: Mapping[str, Any], ignored: Callable[[int], None] | None = None
) -> int:
    """Check a request's parameters (plain values); returns its `timeout` in us (0: none).

    Unknown keys are ignored (`ignored` gets their count); sequence control with a value
    that asks for a sequence, and shared memory, are refused.
    """
    timeout_us = 0
    unknown = 0
    for key, value in parameters.items():
        if key == "timeout":
            timeout_us = _int_parameter(value, "request parameter 'timeout' (microseconds)")
        elif key in SEQUENCE_PARAMETERS:
            if value not in (0, "", False, None):
                raise InvalidInput(
                    f"request parameter {key!r}: no model of this server has sequence "
                    "batching; send independent requests"
                )
        elif key not in REQUEST_PARAMETERS:
            _refuse_shared_memory(key, "the request")
            unknown += 1
    if unknown and ignored is not None:
        ignored(unknown)
    return timeout_us


def output_requests(
    items: Iterable[tuple[str, Mapping[str, Any]]], ignored: Callable[[int], None] | None = None
) -> list[OutputRequest]:
    """The requested outputs from (name, parameters as plain values) pairs.

    Each output may be named once: an answer holds each named output, so naming one
    output N times would build an answer N times as large. Unknown parameters are ignored
    (`ignored` gets their count); shared memory is refused.
    """
    outputs = []
    seen: set[str] = set()
    unknown = 0
    for name, parameters in items:
        if name in seen:
            raise InvalidInput(
                f"output {shown(name)} is requested more than once; name each output once"
            )
        seen.add(name)
        k = 0
        if parameters:
            what = f"output {shown(name)}"
            unknown += check_parameters(parameters, OUTPUT_PARAMETERS, what)
            if "classification" in parameters:
                k = _int_parameter(parameters["classification"], f"{what}: 'classification'")
        outputs.append(OutputRequest(name, k))
    if unknown and ignored is not None:
        ignored(unknown)
    return outputs


def _decode_typed(
    tensor: Any, shape: tuple[int, ...], what: str, max_bytes: int
) -> np.ndarray | list[bytes]:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(
            f"{what}: datatype {tensor.datatype!r} cannot use typed contents; expected one of "
            f"{', '.join(CONTENTS_FIELD)} (FP16 and BF16 need raw_input_contents)"
        )
    values = getattr(tensor.contents, field)
    if tensor.datatype == BYTES:
        count = check_bytes_count(shape, what, max_bytes)
    else:
        count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(
            f"{what}: {field} holds {len(values)} elements but shape {list(shape)} needs {count}"
        )
    if tensor.datatype == BYTES:
        return list(values)
    return np.asarray(values, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(shape)


def _decode_input(
    tensor: Any, raw: bytes | None, max_bytes: int, ignored: Callable[[int], None] | None
) -> InputTensor:
    """One input of a request: `raw` is its raw_input_contents entry, None for typed contents."""
    shape = tuple(tensor.shape)
    what = f"input {shown(tensor.name)}"
    if tensor.parameters:
        unknown = check_parameters(tensor.parameters, INPUT_PARAMETERS, what)
        if unknown and ignored is not None:
            ignored(unknown)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"{what}: give raw_input_contents or typed contents, not both")
        return raw_input(tensor.name, tensor.datatype, shape, raw, max_bytes)
    check_shape(shape, what)
    return InputTensor(
        tensor.name, tensor.datatype, shape, _decode_typed(tensor, shape, what, max_bytes)
    )


def request_from_proto(
    request: pb.ModelInferRequest,
    max_bytes_elements: int = DEFAULT_MAX_BYTES_ELEMENTS,
    counts: ParameterCounts | None = None,
) -> InferRequest:
    """Decode a ModelInferRequest (raises InvalidInput with what was expected); parameters
    it ignores are counted in `counts`.

    Outputs are read before inputs (see `output_requests`). This runs once per request
    on the server's event loop: the common request (raw contents, no parameters but
    perf_analyzer's) takes no detour.
    """
    tensors = request.inputs
    if not tensors:
        raise InvalidInput("request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request "
            f"has {len(tensors)} inputs: give one entry per input, in order"
        )
    parameters = request.parameters
    timeout_us = (
        timeout_from(
            {k: parameter_value(v) for k, v in parameters.items()},
            ignored_counter(counts, "request"),
        )
        if parameters
        else 0
    )
    outputs = None
    if request.outputs:
        outputs = output_requests(
            (
                (
                    out.name,
                    {k: parameter_value(v) for k, v in out.parameters.items()}
                    if out.parameters
                    else {},
                )
                for out in request.outputs
            ),
            ignored_counter(counts, "output"),
        )
    on_input = ignored_counter(counts, "input")
    if raw:
        inputs = [
            _decode_input(tensor, contents, max_bytes_elements, on_input)
            for tensor, contents in zip(tensors, raw, strict=True)
        ]
    else:
        inputs = [_decode_input(tensor, None, max_bytes_elements, on_input) for tensor in tensors]
    return InferRequest(
        request.model_name, request.model_version, inputs, outputs, request.id, timeout_us
    )


def ignored_counter(
    counts: ParameterCounts | None, where: str, protocol: str = "grpc"
) -> Callable[[int], None] | None:
    if counts is None:
        return None
    return functools.partial(counts.add, protocol, where)


def response_to_proto(result: InferResult) -> pb.ModelInferResponse:
    """Build a ModelInferResponse with every output in raw_output_contents."""
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=result.id
    )
    for out in result.outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        if isinstance(out.data, list):
            response.raw_output_contents.append(encode_bytes_elements(out.data))
        else:
            response.raw_output_contents.append(out.data.tobytes())  # C order, any strides
    return response
