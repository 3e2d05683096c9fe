"""Hypothesis strategies for the input paths: near-valid inputs with the edges turned up.

Random bytes rarely get past the first check, so each strategy starts from the
shape of a valid input (a request for a real model, a real PNG, a config with the
real keys) and draws the values that break things: zero, negative and huge
dimensions, byte counts off by a little, NaN, names with dots and slashes.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fuzz import targets
from services.inference.tensors import NUMPY_DTYPES, encode_bytes_elements

# Property tests run the real code on each example: no per-example deadline (the
# machine is shared; hangs are caught by pytest-timeout), and large inputs on purpose.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INT_RANGES = {
    "int_contents": (-(2**31), 2**31 - 1),
    "int64_contents": (-(2**63), 2**63 - 1),
    "uint_contents": (0, 2**32 - 1),
    "uint64_contents": (0, 2**64 - 1),
}
FIELD_OF = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip

dims = st.one_of(
    st.integers(0, 9),
    st.sampled_from([1, 8, 64, -1, 2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]),
)
scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
parameters = st.dictionaries(
    st.sampled_from([*targets.REQUEST_PARAMETERS, "classification", "binary_data"])
    | st.text(max_size=6),
    scalars,
    max_size=2,
)


def _values(draw: st.DrawFn, field: str, count: int) -> list[Any]:
    if field in INT_RANGES:
        lo, hi = INT_RANGES[field]
        return draw(st.lists(st.integers(lo, hi), min_size=count, max_size=count))
    if field == "bool_contents":
        return draw(st.lists(st.booleans(), min_size=count, max_size=count))
    if field == "bytes_contents":
        return draw(st.lists(images() | st.binary(max_size=16), min_size=count, max_size=count))
    floats = st.floats(width=32) if field == "fp32_contents" else st.floats()
    return draw(st.lists(floats, min_size=count, max_size=count))


@st.composite
def tensors(draw: st.DrawFn) -> targets.Tensor:
    """One input: a real or odd datatype and shape, contents of about the right size."""
    datatype = draw(st.sampled_from(targets.DATATYPES) | st.text(max_size=5))
    shape = tuple(draw(st.lists(dims, max_size=5)))
    name = draw(st.sampled_from(["input", "input", "other"]) | st.text(max_size=5))
    count = int(np.prod([max(d, 0) for d in shape], dtype=object)) if shape else 1
    near = count if count < 600 else draw(st.integers(0, 600))
    near = max(0, near + draw(st.sampled_from([0, 0, 0, -1, 1])))
    tensor = targets.Tensor(name, datatype, shape, parameters=draw(parameters | st.just({})))
    mode = draw(st.sampled_from(["raw", "typed", "none"]))
    if mode == "raw" and datatype == "BYTES":
        items = draw(st.lists(images() | st.binary(max_size=8), min_size=near, max_size=near))
        tensor.raw = encode_bytes_elements(items)[: draw(st.none() | st.integers(0, 300)) or None]
    elif mode == "raw":
        dtype = NUMPY_DTYPES.get(datatype, np.dtype(np.float32))
        floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
        values = draw(st.lists(floats, min_size=near, max_size=near))
        raw = np.asarray(values, np.float32).tobytes()
        tensor.raw = raw[: near * dtype.itemsize] + b"\0" * max(0, near * dtype.itemsize - len(raw))
    elif mode == "typed":
        field = draw(st.sampled_from(sorted(targets.CONTENTS)) | st.just(FIELD_OF.get(datatype)))
        if field is not None:
            tensor.contents = (field, _values(draw, field, near))
    return tensor


@st.composite
def infer_cases(draw: st.DrawFn) -> targets.InferCase:
    """A whole request: model, version, inputs, outputs, parameters."""
    return targets.InferCase(
        model=draw(st.sampled_from(targets.MODELS) | st.text(max_size=6)),
        version=draw(st.sampled_from(["", "", "1", "2", "0", "01"]) | st.text(max_size=4)),
        inputs=draw(st.lists(tensors(), max_size=2)),
        outputs=draw(
            st.lists(
                st.tuples(st.sampled_from(targets.OUTPUTS) | st.text(max_size=4), parameters),
                max_size=2,
            )
        ),
        parameters=draw(parameters),
        id=draw(st.text(max_size=4)),
        extra_raw=draw(st.sampled_from([0, 0, 0, 1, -1])),
    )


@st.composite
def images(draw: st.DrawFn) -> bytes:
    """A real PNG or JPEG file of a random mode and size."""
    from PIL import Image

    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    modes = ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"] if fmt == "PNG" else ["L", "RGB", "CMYK"]
    mode = draw(st.sampled_from(modes))
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    image = Image.new(mode, (width, height), draw(st.integers(0, 1 if mode == "1" else 255)))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def damaged(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> bytes:
    """A file cut short, with bytes overwritten, or with bytes inserted."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["cut", "set", "insert"]))
        if action == "cut":
            del data[at:]
        elif action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def dumps(value: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity included, as a buggy writer might)."""
    return json.dumps(value).encode()
