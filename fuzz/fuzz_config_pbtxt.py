"""atheris: config.pbtxt text next to a working ONNX model, loaded as the server loads it.

A config either loads (and the model then answers a request of its shape) or the
load fails with FailedPrecondition and a reason; nothing else may escape.
"""

from __future__ import annotations

from collections.abc import Iterable

import atheris

with atheris.instrument_imports(include=["services", "fuzz", "google.protobuf.text_format"]):
    from fuzz import targets
    from fuzz.harness import main
    from fuzz.workspace import CONFIG_BASE

BASE = CONFIG_BASE
EXTRAS = [
    "",
    "dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 }",
    "dynamic_batching { default_queue_policy { max_queue_size: 2 default_timeout_microseconds:"
    " 1000 allow_timeout_override: true } }",
    "version_policy { all { } }",
    "version_policy { specific { versions: [ 1, 3 ] } }",
    "version_policy { latest { num_versions: 0 } }",
    "instance_group [ { kind: KIND_CPU count: 2 } ]",
    "instance_group [ { kind: KIND_GPU count: 1 } ]",
    "optimization { graph { level: -1 } }",
    'default_model_filename: "model.onnx"',
    'backend: "onnxruntime"',
]
TOKENS = [
    b"max_batch_size:", b"dims:", b"data_type:", b"TYPE_FP32", b"TYPE_STRING", b"TYPE_INT64",
    b"label_filename:", b"default_model_filename:", b"dynamic_batching", b"version_policy",
    b"instance_group", b"KIND_GPU", b"KIND_MODEL", b"preferred_batch_size:", b"-1", b"../",
    b"reshape", b"optimization", b"platform:", b"\"onnxruntime_onnx\"",
]  # fmt: skip


def seeds() -> Iterable[bytes]:
    return [(BASE + extra + "\n").encode() for extra in EXTRAS] + [
        BASE.replace("max_batch_size: 4", "max_batch_size: 0").encode(),
        BASE.replace('"labels.txt"', '"../labels.txt"').encode(),
    ]


def test_one_input(data: bytes) -> None:
    targets.check_config_pbtxt(data)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
