"""Tensors and inference requests as the server's core sees them (no protobuf here).

`InferRequest` holds numpy arrays (or lists of bytes for BYTES tensors); the
protocol layer builds it from a ModelInferRequest and turns an `InferResult`
back into a response. Datatype names are the protocol's ("FP32", "BYTES", ...).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from services.common.errors import InvalidInput

NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"

DEFAULT_MAX_BYTES_ELEMENTS = 1024
DEFAULT_MAX_IMAGE_SCALE = 16.0


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on what one request may make the server hold or compute, checked before work.

    Each comes from a `stride serve` flag (docs/serving.md lists them with their defaults).
    """

    # Largest answer in bytes (None: the server's message limit, --max-message-mb); an
    # answer that would be larger is refused before the model runs.
    max_response_bytes: int | None = None
    # BYTES elements (encoded images) in one input; counted before any is split out, so a
    # request of millions of empty elements costs nothing.
    max_bytes_elements: int = DEFAULT_MAX_BYTES_ELEMENTS
    # An image may be at most this many times the model's input height and width (in
    # pixels all told): decoding costs time and memory in proportion to the pixels.
    max_image_scale: float = DEFAULT_MAX_IMAGE_SCALE
    # Images being decoded at once, across all requests (0: one per core).
    max_decodes: int = 0

    def __post_init__(self) -> None:
        if self.max_response_bytes is not None and self.max_response_bytes < 1:
            raise ValueError(f"max response bytes must be positive, got {self.max_response_bytes}")
        if self.max_bytes_elements < 1:
            raise ValueError(
                f"max BYTES elements must be at least 1, got {self.max_bytes_elements}"
            )
        if self.max_image_scale < 1:
            raise ValueError(f"max image scale must be at least 1, got {self.max_image_scale}")
        if self.max_decodes < 0:
            raise ValueError(f"max decodes must be >= 0, got {self.max_decodes}")


@dataclass(slots=True)
class InputTensor:
    """A request input: numpy array for numeric types, list of bytes for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


class OutputRequest(NamedTuple):
    """A requested output; `classification` > 0 asks for the k best classes as strings."""

    name: str
    classification: int = 0


@dataclass(slots=True)
class InferRequest:
    """One inference request, already decoded from the wire."""

    model: str
    version: str  # "" lets the server choose
    inputs: list[InputTensor]
    outputs: list[OutputRequest] | None = None  # None: every output
    id: str = ""
    timeout_us: int = 0  # 0: the model's default


@dataclass(slots=True)
class OutputTensor:
    """A response output: numeric array, or list of bytes (classification strings)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


@dataclass(slots=True)
class InferResult:
    model: str
    version: str
    id: str
    outputs: list[OutputTensor] = field(default_factory=list)


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# numpy cannot even describe a shape whose non-zero dimensions multiply past its index
# range, empty or not; no message size limit lets a real tensor come near this.
MAX_SHAPE_ELEMENTS = 2**40


def check_shape(shape: tuple[int, ...], what: str) -> None:
    count = 1  # of the non-zero dimensions
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"{what}: shape {list(shape)} has a negative dimension")
        if dim:
            count *= dim
    if count > MAX_SHAPE_ELEMENTS:
        raise InvalidInput(
            f"{what}: shape {list(shape)} is too large (its non-zero dimensions multiply to "
            f"more than 2**40 elements)"
        )


def decode_bytes_elements(
    raw: bytes | memoryview, what: str, expected: int | None = None
) -> list[bytes]:
    """Split BYTES raw contents: each element is a 4-byte little-endian length, then the bytes.

    The server passes `expected`, the element count the request's shape declares (bounded
    before this is called): finding more stops the split there, so the list never grows
    past what the request announced. Clients reading an answer pass nothing.
    """
    items: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if len(items) == expected:
            raise InvalidInput(
                f"{what}: BYTES contents hold more than the {expected} elements its shape declares"
            )
        if offset + 4 > len(view):
            raise InvalidInput(f"{what}: BYTES contents end inside a 4-byte length prefix")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise InvalidInput(
                f"{what}: BYTES element {len(items)} declares {size} bytes but only "
                f"{len(view) - offset} remain"
            )
        items.append(bytes(view[offset : offset + size]))
        offset += size
    return items


def encode_bytes_elements(items: list[bytes]) -> bytes:
    """The inverse of `decode_bytes_elements` (what tritonclient's deserializer expects)."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def array_from_raw(
    raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], what: str
) -> np.ndarray:
    """View raw little-endian contents as an array of `shape`; the byte size must match."""
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"{what}: unknown datatype {datatype!r}; expected one of "
            f"{', '.join([*NUMPY_DTYPES, BYTES])}"
        )
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{what}: raw contents are {len(raw)} bytes but shape {list(shape)} of {datatype} "
            f"needs {expected} bytes"
        )
    return np.ndarray(shape, dtype, raw)  # a view of `raw` (read-only for bytes), as np.frombuffer
