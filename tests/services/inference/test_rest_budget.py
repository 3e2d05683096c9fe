"""The REST memory budget: what JSON costs once parsed, and the budget per server and client."""

from __future__ import annotations

import gc
import json
import tracemalloc

import numpy as np
import pytest

from services.common.errors import ResourceExhausted
from services.inference import rest
from services.inference.rest_budget import Held, JsonCost, MemoryBudget, TooCostly, json_cost

N = 20_000


def _tensor(data: object, datatype: str = "FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [N], "data": data}]}
    ).encode()


BODIES = {
    "empty objects": b"[" + b"{}," * (N - 1) + b"{}]",
    "empty lists": b"[" + b"[]," * (N - 1) + b"[]]",
    "nested one-element lists": b"[" + b"[0]," * (N - 1) + b"[0]]",
    "small objects": b"[" + b'{"a":1},' * (N - 1) + b'{"a":1}]',
    "objects of distinct keys": b"{" + b",".join(b'"k%06d":0' % i for i in range(N)) + b"}",
    "two-character strings": b"[" + b'"ab",' * (N - 1) + b'"ab"]',
    "an ASCII string with one emoji": json.dumps(
        ["a" * N + "\U0001f600"], ensure_ascii=False
    ).encode(),
    "escaped astral characters": json.dumps(["\U0001f600" * N]).encode(),
    "big integers": b"[" + b"1234567890123," * (N - 1) + b"1]",
    "short floats, converted": _tensor([1.5] * N),
    "long floats, converted": _tensor([0.7733514904975891] * N),
    "small integers, converted": _tensor([7] * N, "INT32"),
    "strings, converted": _tensor(["ab"] * N, "BYTES"),
}


def _parse_and_convert(body: bytes) -> object:
    value = rest.loads(body)
    if isinstance(value, dict) and "inputs" in value:
        return rest.request_from_json("m", "", value, memoryview(b""), max_bytes_elements=N)
    return value


@pytest.mark.parametrize("name", list(BODIES))
def test_json_cost_bounds_what_parsing_and_converting_take(name: str) -> None:
    """The bound against the peak that tracemalloc sees while the body is parsed (and, for
    infer requests, converted to arrays), beyond the body itself."""
    body = BODIES[name]
    gc.collect()
    tracemalloc.start()
    try:
        kept = _parse_and_convert(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    assert peak <= json_cost(body), (name, peak / len(body), json_cost(body) / len(body))


def test_json_cost_adds_up_over_the_parts_of_a_body() -> None:
    """Counted as it arrives, a body costs what it costs whole: the part that is not ASCII
    widens the parts before it too."""
    body = BODIES["small objects"] + BODIES["an ASCII string with one emoji"]
    cost = JsonCost()
    parts = sum(cost.add(body[i : i + 4096]) for i in range(0, len(body), 4096))
    assert parts >= json_cost(body) > json_cost(BODIES["small objects"]) + 8 * len(body) // 2


def test_the_budget_is_shared_per_client_and_in_all() -> None:
    budget = MemoryBudget(total=100, per_peer=60)
    first = Held(budget, "10.0.0.1")
    first.reserve(50)
    with pytest.raises(ResourceExhausted, match="this client's share"):
        Held(budget, "10.0.0.1").reserve(20)  # the client's 60
    other = Held(budget, "10.0.0.2")
    other.reserve(50)
    with pytest.raises(ResourceExhausted, match="the server's share"):
        Held(budget, "10.0.0.3").reserve(1)  # all 100
    with pytest.raises(TooCostly, match="more than one client may hold"):
        Held(budget, "10.0.0.3").reserve(61)  # never admissible: 413, not 429
    first.release()
    other.force(30)  # an answer being sent counts past the limits
    assert (budget.held, budget.of("10.0.0.2"), budget.of("10.0.0.1")) == (80, 80, 0)
    other.release()
    first.release()  # releasing twice gives nothing back twice
    assert budget.held == 0 and budget.of("10.0.0.2") == 0


def test_a_budget_needs_a_share_within_its_total() -> None:
    with pytest.raises(ValueError, match="per-client share"):
        MemoryBudget(total=10, per_peer=11)


def test_parsed_arrays_view_the_binary_data_in_place() -> None:
    """Binary tensor data is read where it lies in the body (no copy the budget misses), and
    the arrays cannot be written through."""
    raw = np.arange(4, dtype=np.float32).tobytes()
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4],
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    body = bytearray(header + raw)
    parsed, binary = rest.parse_header(body, str(len(header)))
    request, _ = rest.request_from_json("m", "", parsed, binary, 16)
    array = request.inputs[0].data
    assert isinstance(array, np.ndarray) and np.shares_memory(array, np.frombuffer(body, np.uint8))
    assert not array.flags.writeable
