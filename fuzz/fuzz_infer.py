"""atheris: inference requests through the inference servicer, in-process.

Two decodings of the input, by its first byte: even, the rest is a serialised
ModelInferRequest (what a client puts on the wire; bytes protobuf cannot parse never
reach the servicer, gRPC refuses them first); odd, the rest drives a structured
request (model, version, inputs with datatypes, shapes, raw bytes of near-right or
wrong length or typed contents, outputs and parameters), which reaches the deeper
checks far more often. The wire seeds cover raw and typed contents, BYTES images,
classification and request parameters, and the workspace's three models.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import atheris

with atheris.instrument_imports(include=["services", "fuzz"]):
    from google.protobuf.message import DecodeError

    from fuzz import targets
    from fuzz.harness import main
    from services.generated.inference import grpc_service_pb2 as pb
    from services.inference.tensors import encode_bytes_elements

TOKENS = [
    *(d.encode() for d in targets.DATATYPES),
    *(m.encode() for m in targets.MODELS),
    *(o.encode() for o in targets.OUTPUTS),
    *(p.encode() for p in targets.REQUEST_PARAMETERS),
    b"input",
    b"classification",
    b"triton_enable_empty_final_response",
]


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5, 7), 99).save(buf, format="PNG")
    return buf.getvalue()


def seeds() -> Iterable[bytes]:
    """Valid and nearly valid requests, serialised."""
    import numpy as np

    T, C = targets.Tensor, targets.InferCase
    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32)
    cases = [
        C(inputs=[T(shape=(2, 1, 8, 8), raw=x.tobytes())]),
        C(
            inputs=[T(shape=(2, 1, 8, 8), raw=x.tobytes())],
            outputs=[("probabilities", {"classification": 3})],
            parameters={"timeout": 100000},
            id="seed",
        ),
        C(inputs=[T(shape=(1, 64), contents=("fp32_contents", [0.5] * 64))]),
        C(inputs=[T(shape=(1, 1, 8, 8), contents=("fp32_contents", [0.5] * 64))], version="1"),
        C(inputs=[T(datatype="BYTES", shape=(1,), raw=encode_bytes_elements([_png()]))]),
        C(inputs=[T(datatype="BYTES", shape=(1, 1), contents=("bytes_contents", [_png()]))]),
        C(model="nobatch", inputs=[T(shape=(1, 8, 8), raw=x[:64].tobytes())]),
        C(model="rgb", inputs=[T(shape=(1, 3, 4, 4), raw=x[:48].tobytes())]),
        C(inputs=[T(datatype="INT32", shape=(1, 1, 8, 8), contents=("int_contents", [1] * 64))]),
        C(inputs=[T(datatype="FP16", shape=(1, 1, 8, 8), raw=b"\0" * 128)]),
    ]
    return [b"\0" + targets.build_request(c).SerializeToString() for c in cases] + [
        b"\1" + bytes(range(256)),
        b"\1" + b"\0" * 64,
    ]


DIMS = (0, 1, 2, 3, 4, 8, 64, -1, 2**31, 2**62, -(2**63))
SCALARS: tuple[Any, ...] = (0, 1, -1, 3, 2**63 - 1, 2**64 - 1, True, False, 0.5, "", "x")
PARAMETERS = (*targets.REQUEST_PARAMETERS, "classification", "binary_data", "other")


def _pick(fdp: Any, options: Sequence[Any]) -> Any:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def _text(fdp: Any, options: Sequence[str]) -> str:
    if fdp.ConsumeIntInRange(0, 7):
        return str(_pick(fdp, options))
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)))


def _value(fdp: Any, kind: type) -> Any:
    if kind is bool:
        return fdp.ConsumeBool()
    if kind is float:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind is bytes:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    return fdp.ConsumeIntInRange(0, 127)


def _parameters(fdp: Any) -> dict[str, Any]:
    return {_text(fdp, PARAMETERS): _pick(fdp, SCALARS) for _ in range(fdp.ConsumeIntInRange(0, 2))}


def _tensor(fdp: Any) -> targets.Tensor:
    datatype = _text(fdp, targets.DATATYPES)
    shape = tuple(_pick(fdp, DIMS) for _ in range(fdp.ConsumeIntInRange(0, 5)))
    tensor = targets.Tensor(_text(fdp, ("input", "other")), datatype, shape)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:  # raw bytes: the right length for FP32 more often than not
        count = 1
        for d in shape:
            count *= max(d, 0)
        size = count * 4 if count < 4096 and fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 300)
        tensor.raw = fdp.ConsumeBytes(size)
    elif mode == 1:
        name = _pick(fdp, sorted(targets.CONTENTS))
        kind = targets.CONTENTS[name]
        tensor.contents = (name, [_value(fdp, kind) for _ in range(fdp.ConsumeIntInRange(0, 70))])
    if fdp.ConsumeIntInRange(0, 7) == 0:
        tensor.parameters = _parameters(fdp)
    return tensor


def structured(fdp: Any) -> targets.InferCase:
    """A request built field by field from the fuzzer's bytes."""
    return targets.InferCase(
        model=_text(fdp, targets.MODELS),
        version=_text(fdp, ("", "1", "2", "0")),
        inputs=[_tensor(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2))],
        outputs=[
            (_text(fdp, targets.OUTPUTS), _parameters(fdp))
            for _ in range(fdp.ConsumeIntInRange(0, 2))
        ],
        parameters=_parameters(fdp),
        extra_raw=fdp.ConsumeIntInRange(-1, 1),
    )


def test_one_input(data: bytes) -> None:
    if data and data[0] & 1:
        targets.check_infer(structured(atheris.FuzzedDataProvider(data[1:])))
        return
    try:
        request = pb.ModelInferRequest.FromString(data[1:])
    except DecodeError:
        return
    targets.check_infer_request(request)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
