"""Inference requests through the servicer in-process: served, or refused with a domain error.

A domain error maps to a documented status (INVALID_ARGUMENT, NOT_FOUND, ...);
anything else would reach the client as INTERNAL, which is a bug.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from fuzz.workspace import CONTEXT, Workspace
from services.generated.inference import grpc_service_pb2 as pb
from tests.fuzz.strategies import FUZZ, damaged, images, infer_cases

pytestmark = pytest.mark.timeout(300)


@FUZZ
@given(case=infer_cases())
def test_any_request_is_served_or_refused_with_a_domain_error(
    ws: Workspace, case: targets.InferCase
) -> None:
    targets.check_infer(case)


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_wire_bytes_are_served_or_refused_with_a_domain_error(
    ws: Workspace, data: bytes
) -> None:
    try:
        request = pb.ModelInferRequest.FromString(data)
    except Exception:  # gRPC itself refuses what protobuf cannot parse
        return
    targets.check_infer_request(request)


@FUZZ
@given(
    model=st.sampled_from(["digits", "rgb"]),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, 12),
)
def test_valid_requests_are_served_with_probabilities(
    ws: Workspace, model: str, batch: int, seed: int, k: int
) -> None:
    # The other side of the property: the fuzz targets must not pass by refusing everything.
    shape = (batch, 1, 8, 8) if model == "digits" else (batch, 3, 4, 4)
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    outputs = [("probabilities", {"classification": k} if k else {})]
    case = targets.InferCase(model, inputs=[targets.Tensor(shape=shape, raw=x.tobytes())])
    case.outputs = outputs
    response = asyncio.run(ws.servicer.ModelInfer(targets.build_request(case), CONTEXT))
    (out,) = response.outputs
    if k:
        assert out.datatype == "BYTES" and list(out.shape) == [batch, min(k, 10)]
    else:
        probs = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(batch, 10)
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@FUZZ
@given(files=st.lists(images() | damaged(images()), min_size=1, max_size=3))
def test_image_bytes_in_a_request_are_served_or_refused(ws: Workspace, files: list[bytes]) -> None:
    tensor = targets.Tensor(datatype="BYTES", shape=(len(files),))
    tensor.contents = ("bytes_contents", files)
    targets.check_infer(targets.InferCase("digits", inputs=[tensor]))
