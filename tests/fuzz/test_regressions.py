"""Every crash found while fuzzing, as the minimal input and the documented error it must raise.

Each test says what found it: an atheris harness, or a probe of the edge cases written
while building a fuzz target (before the harness ran). Before the fix each of
these raised something outside the documented errors: the gRPC services answered
INTERNAL, `stride train` printed a traceback, or a run-store scan raised.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from pipeline.config import ConfigError, apply_override, load_config, parse_config
from runstore import BadName, RunStore, parse_metrics, parse_summary
from runstore import MalformedRun as MalformedRunError
from services.common.errors import InvalidInput
from services.generated.inference import grpc_service_pb2 as pb
from services.inference import protocol
from services.inference.preprocess import Preprocess

DEEP_JSON = b"[" * 100_000


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (the data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------- inference requests


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
@pytest.mark.parametrize("shape", [[0, 2**62], [0, 2**40, 2**40]])
def test_zero_sized_shape_with_huge_dims_is_invalid_input(shape: list[int], typed: bool) -> None:
    # A probe while writing the infer target: numpy's "array is too big" ValueError escaped
    # as INTERNAL.
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=shape)
    if typed:
        tensor.contents.fp32_contents.extend([])
    else:
        request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="shape"):
        protocol.request_from_proto(request)


def test_image_whose_header_claims_a_decompression_bomb_is_invalid_input() -> None:
    # A probe while writing the image target: PIL's DecompressionBombError (a header over
    # 2 x 89 megapixels) escaped before the server's own 64-megapixel check.
    pre = Preprocess(1, 8, 8, (0.5,), (0.25,))
    with pytest.raises(InvalidInput, match="pixels"):
        pre.image_to_array(_png_header(20_000, 20_000))


# ---------------------------------------------------------------- run store


def test_deeply_nested_metrics_line_is_malformed_not_a_recursion_error() -> None:
    # A probe while writing the run-store target: json's RecursionError escaped the reader.
    with pytest.raises(MalformedRunError):
        parse_metrics(b'{"epoch": 1}\n' + DEEP_JSON + b"\n")


def test_deeply_nested_summary_is_malformed() -> None:
    with pytest.raises(MalformedRunError):
        parse_summary(DEEP_JSON)


def test_scan_lists_a_run_with_deeply_nested_config_as_malformed(tmp_path: Path) -> None:
    run = tmp_path / "exp" / "run-1"
    run.mkdir(parents=True)
    (run / "config.json").write_bytes(DEEP_JSON)
    scan = RunStore(str(tmp_path)).scan("exp")
    assert scan.runs == () and [s.run_id for s in scan.malformed] == ["run-1"]


def test_run_id_longer_than_the_file_system_allows_is_invalid(tmp_path: Path) -> None:
    # fuzz_names: 200 two-byte characters pass the 255-character pattern, but the file
    # system's limit is 255 bytes: os.stat raised ENAMETOOLONG (INTERNAL).
    (tmp_path / "fz").mkdir()
    store = RunStore(str(tmp_path))
    with pytest.raises(BadName, match="bytes"):
        store.run("fz", "r" + "é" * 200)
    with pytest.raises(BadName, match="bytes"):
        store.scan("ff" + "Â" * 200)


# ---------------------------------------------------------------- run configs


@pytest.mark.parametrize(
    "text",
    [
        b"seed: 2020-01-01\n",  # a YAML date
        b"model: {name: !!binary aGVsbG8=}\n",  # bytes
        b"model: !!set {a, b}\n",  # a set
        b"model: &a [*a]\n",  # a list that contains itself
        b"[" * 5000,  # nesting deeper than the YAML parser's recursion
        b"\xff\xfe seed: 1\n",  # not UTF-8
        b"seed: 2001-02-31\n",  # a date YAML cannot build (fuzz_run_config: ValueError)
        b"seed: !!float abc\n",
    ],
    ids=["date", "binary", "set", "recursive", "deep", "not-utf8", "bad-date", "bad-float"],
)
def test_config_file_that_is_not_plain_data_is_a_config_error(tmp_path: Path, text: bytes) -> None:
    # fuzz_run_config (UnicodeDecodeError, the impossible date) and probes while writing it
    # (TypeError, ValueError, RecursionError): each escaped `load_config`, so `stride train`
    # printed a traceback instead of one line.
    path = tmp_path / "run.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError):
        load_config(path)


def test_override_with_a_date_yaml_cannot_build_is_read_as_text() -> None:
    # fuzz_run_config: yaml raised ValueError for 2001-02-31 out of `apply_override`.
    data: dict[str, object] = {}
    apply_override(data, "model.name=2001-02-31")
    assert data == {"model": {"name": "2001-02-31"}}
    with pytest.raises(ConfigError, match="seed"):
        parse_config({}, ["seed=2001-02-31"])


def test_override_nested_deeper_than_yaml_can_parse_is_a_config_error() -> None:
    data: dict[str, object] = {}
    with pytest.raises(ConfigError):
        apply_override(data, "seed=" + "[" * 5000)
    with pytest.raises(ConfigError):
        parse_config({}, ["seed=" + "[" * 5000])


# ---------------------------------------------------------------- config.pbtxt


def test_config_with_the_largest_max_batch_size_loads_without_allocating_it(
    tmp_path: Path,
) -> None:
    # A probe while writing the config.pbtxt target: warm-up allocated max_batch_size rows.
    # At 2**31 - 1 the MemoryError escaped the load (a failed start for every model,
    # INTERNAL on load); at 2**26 the load took gigabytes for a 64-float input
    # (docs/performance.md, what the fuzzers found).
    from bench.repo import linear_model
    from services.inference.repository import ModelRepository

    folder = linear_model(tmp_path, "m", max_batch=4)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 4", "max_batch_size: 2147483647"))
    repository = ModelRepository(tmp_path)
    try:
        repository.poll()
        assert repository.is_ready("m")
    finally:
        repository.close()


def test_warm_up_stops_at_its_byte_budget() -> None:
    import numpy as np

    from services.inference.config import ModelSettings, TensorSpec
    from services.inference.runtime import WARM_UP_MAX_BYTES, warm_up

    class Session:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def run(self, names: object, feeds: dict[str, np.ndarray]) -> None:
            self.sizes.append(sum(a.nbytes for a in feeds.values()))

    spec = TensorSpec("input", "FP32", (1, 8, 8))
    settings = ModelSettings("m", 2**26, (spec,), (), True, (4, 2**20), 0, 0, 0, False, 1, False, 0)
    session = Session()
    warm_up(session, settings)
    assert session.sizes == [256, 4 * 256]  # 2**20 rows (256 MiB) and 2**26 rows are skipped
    assert max(session.sizes) <= WARM_UP_MAX_BYTES


def test_config_dim_minus_one_over_a_fixed_graph_dim_fails_that_model_alone(
    tmp_path: Path,
) -> None:
    # fuzz_config_pbtxt (make fuzz, 300 s): dims [1, 8, -1] for a graph of [1, 8, 8] passed
    # the signature check, then ONNX Runtime's InvalidArgument escaped the warm-up: the
    # repository scan raised, so the server would not start for any model.
    from bench.repo import linear_model
    from services.inference.repository import ModelRepository

    linear_model(tmp_path, "ok", max_batch=4)
    folder = linear_model(tmp_path, "m", max_batch=4)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 1, 8, 8 ]", "dims: [ 1, 8, -1 ]"))
    repository = ModelRepository(tmp_path)
    try:
        repository.poll()
        assert repository.is_ready("ok") and not repository.is_ready("m")
        (entry,) = [e for e in repository.index() if e.name == "m"]
        assert "-1" in entry.reason
    finally:
        repository.close()


def test_warm_up_that_onnx_runtime_refuses_is_a_config_error() -> None:
    import numpy as np

    from services.inference.config import ModelConfigError, ModelSettings, TensorSpec
    from services.inference.runtime import warm_up

    class Session:
        def run(self, names: object, feeds: dict[str, np.ndarray]) -> None:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT")

    spec = TensorSpec("input", "FP32", (1, 8, 8))
    settings = ModelSettings("m", 4, (spec,), (), False, (), 0, 0, 0, False, 1, False, 0)
    with pytest.raises(ModelConfigError, match="warm-up"):
        warm_up(Session(), settings)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("format: FORMAT_NCHW", "format: 111111111111111111111111111"),
        ("data_type: TYPE_FP32 format", "data_type: 2147483648 format"),
    ],
)
def test_config_enum_past_int32_fails_that_model_alone(tmp_path: Path, old: str, new: str) -> None:
    # fuzz_config_pbtxt (make fuzz): protobuf's text parser raises ValueError, not ParseError,
    # for an enum given a number out of range; it escaped the repository scan.
    from bench.repo import linear_model
    from services.inference.repository import ModelRepository

    linear_model(tmp_path, "ok", max_batch=4)
    folder = linear_model(tmp_path, "m", max_batch=4)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace(old, new, 1))
    repository = ModelRepository(tmp_path)
    try:
        repository.poll()
        assert repository.is_ready("ok") and not repository.is_ready("m")
        (entry,) = [e for e in repository.index() if e.name == "m"]
        assert "out of range" in entry.reason
    finally:
        repository.close()
