"""A ModelInferRequest's element counts, read from the wire before protobuf parses it.

Protobuf makes an object of every element of a repeated field, and some elements
are tiny on the wire: an empty `bytes_contents` entry or an empty `outputs` entry
takes 2 bytes there and 16 to 100 once parsed, so a request of tens of MB of empty
entries makes protobuf allocate gigabytes and spend seconds of CPU before any of
Stride's own checks can run (docs/notes/request-costs.md). So `parse_infer_request`
walks the message first and counts the elements of every repeated field, stopping
at the first count past its limit (the walk costs no more than the limits), and
only then lets protobuf build the message. A request under `SCAN_FROM` bytes cannot
grow past a few MB and is parsed at once.

The limits are far above what a model needs: no model has 1024 inputs or outputs,
a parameters map of 64 entries or a tensor of 64 dimensions.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import DecodeError

from services.common.errors import InvalidInput
from services.generated.inference import grpc_service_pb2 as pb
from services.inference.tensors import DEFAULT_MAX_BYTES_ELEMENTS

MAX_TENSORS = 1024  # inputs, outputs or raw_input_contents entries in one request
MAX_PARAMETERS = 64  # entries of one parameters map
MAX_DIMS = 64  # dimensions of one tensor's shape
MAX_REPEATS = 16  # occurrences of any other field (a singular field comes once)
SCAN_FROM = 64 * 1024  # bytes; smaller requests are parsed without the walk
# What an inference request holds once read, per byte of its message, for the gRPC memory
# budget (services.common.budget): the message parsed by protobuf, its tensors' bytes
# copied out of it, and a batch's inputs joined into one array.
INFER_REQUEST_COST = 3.0
REQUEST_COSTS = {"ModelInfer": INFER_REQUEST_COST, "ModelStreamInfer": INFER_REQUEST_COST}

_REQUEST = pb.ModelInferRequest.DESCRIPTOR.fields_by_name
_INPUT = pb.ModelInferRequest.InferInputTensor.DESCRIPTOR.fields_by_name
_OUTPUT = pb.ModelInferRequest.InferRequestedOutputTensor.DESCRIPTOR.fields_by_name
_CONTENTS = pb.InferTensorContents.DESCRIPTOR.fields_by_name
INPUTS, OUTPUTS = _REQUEST["inputs"].number, _REQUEST["outputs"].number
SHAPE, CONTENTS = _INPUT["shape"].number, _INPUT["contents"].number
BYTES_CONTENTS = _CONTENTS["bytes_contents"].number

# Field number -> (most elements, what they are), per message.
REQUEST_LIMITS = {
    _REQUEST["parameters"].number: (MAX_PARAMETERS, "request parameters"),
    INPUTS: (MAX_TENSORS, "inputs"),
    OUTPUTS: (MAX_TENSORS, "outputs"),
    _REQUEST["raw_input_contents"].number: (MAX_TENSORS, "raw_input_contents entries"),
}
INPUT_LIMITS = {
    SHAPE: (MAX_DIMS, "shape dimensions"),
    _INPUT["parameters"].number: (MAX_PARAMETERS, "parameters"),
}
OUTPUT_LIMITS = {_OUTPUT["parameters"].number: (MAX_PARAMETERS, "parameters")}


class Malformed(ValueError):
    """The bytes are not protobuf's wire format."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise Malformed("a varint runs past its field")


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each field's value; start == end for non-bytes values."""
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = _varint(data, pos, end)
            yield number, pos, pos
            continue
        if kind == 2:
            length, pos = _varint(data, pos, end)
            start, pos = pos, pos + length
        elif kind in (1, 5):
            start, pos = pos, pos + (8 if kind == 1 else 4)
        else:
            raise Malformed(f"wire type {kind} is not used by this protocol")
        if pos > end:
            raise Malformed(f"field {number} runs past its message")
        yield number, start, pos


def _walk(
    data: bytes,
    start: int,
    end: int,
    limits: dict[int, tuple[int, str]],
    where: str,
    packed: frozenset[int] = frozenset(),
) -> Iterator[tuple[int, int, int]]:
    """Count the fields of one message against `limits`; yield each (number, start, end).

    A field in `packed` counts one element per byte of a packed run (each varint has at
    least one), so a packed shape is bounded without decoding it.
    """
    counts: dict[int, int] = {}
    for number, value_start, value_end in _fields(data, start, end):
        size = value_end - value_start if number in packed and value_end > value_start else 1
        count = counts[number] = counts.get(number, 0) + size
        limit, what = limits.get(number, (MAX_REPEATS, f"repeats of field {number}"))
        if count > limit:
            raise InvalidInput(
                f"{where} holds more than {limit} {what}; refused before decoding "
                "(a larger count cannot be a valid request here)"
            )
        yield number, value_start, value_end


def check_infer_request(data: bytes, max_bytes_elements: int) -> None:
    """Raise InvalidInput if the serialized request has more elements than allowed."""
    contents_limits = {
        BYTES_CONTENTS: (max_bytes_elements, "BYTES elements (--max-bytes-elements)")
    }
    inputs = outputs = 0
    for number, start, end in _walk(data, 0, len(data), REQUEST_LIMITS, "the request"):
        if number == INPUTS:
            where = f"input {inputs}"
            inputs += 1
            for field, s, e in _walk(data, start, end, INPUT_LIMITS, where, frozenset({SHAPE})):
                if field == CONTENTS:
                    for _ in _walk(data, s, e, contents_limits, f"{where}'s contents"):
                        pass
        elif number == OUTPUTS:
            for _ in _walk(data, start, end, OUTPUT_LIMITS, f"output {outputs}"):
                pass
            outputs += 1


def parse_infer_request(
    data: bytes, max_bytes_elements: int = DEFAULT_MAX_BYTES_ELEMENTS
) -> pb.ModelInferRequest:
    """The request parser of ModelInfer and ModelStreamInfer: count, then parse."""
    try:
        if len(data) > SCAN_FROM:
            check_infer_request(data, max_bytes_elements)
        return pb.ModelInferRequest.FromString(data)
    except (Malformed, DecodeError) as exc:
        raise InvalidInput(f"not a valid ModelInferRequest: {exc}") from exc
