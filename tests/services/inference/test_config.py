"""config.pbtxt parsing and checks, version policies, names, image preprocessing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import InvalidInput
from services.inference.config import (
    ModelConfigError,
    check_model_name,
    parse_version,
    read_config,
    settings_from,
    version_policy_select,
)
from services.inference.preprocess import Preprocess
from services.inference.runtime import choose_providers
from tests.services.inference.onnx_models import config_text


def write(tmp_path: Path, text: str, name: str = "digits") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.pbtxt").write_text(text)
    return folder / "config.pbtxt"


def test_documented_config_parses_into_settings(tmp_path: Path) -> None:
    path = write(tmp_path, config_text("digits", batching="preferred_batch_size: [ 8, 4 ] "
                 "max_queue_delay_microseconds: 500 default_queue_policy { max_queue_size: 7 "
                 "default_timeout_microseconds: 900 allow_timeout_override: true }"))  # fmt: skip
    s = settings_from(read_config(path), path)
    assert (s.name, s.max_batch_size, s.dynamic_batching) == ("digits", 8, True)
    assert s.preferred_batch_sizes == (4, 8) and s.max_queue_delay_us == 500
    assert (s.max_queue_size, s.default_timeout_us, s.allow_timeout_override) == (7, 900, True)
    assert s.inputs[0].dims == (1, 8, 8) and s.outputs[1].label_filename == "labels.txt"
    assert s.use_gpu is False and s.instance_count == 1


def test_name_defaults_to_the_folder_and_must_match_it(tmp_path: Path) -> None:
    text = config_text("digits").replace('name: "digits"\n', "")
    assert read_config(write(tmp_path, text)).name == "digits"
    with pytest.raises(ModelConfigError, match="differs from its folder"):
        read_config(write(tmp_path, config_text("other")))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('platform: "onnxruntime_onnx"', 'platform: "tensorflow_savedmodel"'), "is not served"),
        (("max_batch_size: 8", "max_batch_size: -1"), "max_batch_size must be >= 0"),
        (("max_batch_size: 8", "max_batch_size: 2"), "outside 1..max_batch_size"),
        (("dims: [ 1, 8, 8 ]", "dims: [ 1, 0, 8 ]"), "dims must be positive or -1"),
        (('name: "logits"', 'name: "input"'), "tensor names must be unique"),
        (("kind: KIND_CPU", "kind: KIND_MODEL"), "KIND_MODEL is not supported"),
        (("max_batch_size: 8", "max_batch_siz: 8"), "not a valid ModelConfig"),
    ],
)
def test_invalid_configs_say_what_is_wrong(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, config_text("digits").replace(*change))
    with pytest.raises(ModelConfigError, match=message):
        settings_from(read_config(path), path)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("", [5]), ("latest { num_versions: 2 }", [3, 5]), ("all { }", [1, 3, 5]),
     ("specific { versions: [ 1, 4 ] }", [1])],
)  # fmt: skip
def test_version_policy(tmp_path: Path, policy: str, expected: list[int]) -> None:
    text = (
        config_text("digits", policy=policy)
        if policy
        else config_text("digits").replace("version_policy { latest { num_versions: 1 } }\n", "")
    )
    assert version_policy_select(read_config(write(tmp_path, text)), [5, 1, 3]) == expected


def test_names_and_versions() -> None:
    assert check_model_name("digits-v2.1_a") == "digits-v2.1_a"
    for bad in ["", ".", "..", "a/b", "-x", "x" * 129]:
        with pytest.raises(InvalidInput):
            check_model_name(bad)
    assert parse_version("") is None and parse_version("12") == 12
    for bad in ["0", "-1", "1.0", "01", "x"]:
        with pytest.raises(InvalidInput):
            parse_version(bad)


def test_cuda_is_required_when_asked_for() -> None:
    with pytest.raises(ModelConfigError, match="no CUDAExecutionProvider"):
        choose_providers(True, ["CPUExecutionProvider"])
    assert choose_providers(True, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider"
    ]
    assert choose_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(False, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]


def test_preprocess_resizes_converts_and_normalises() -> None:
    from PIL import Image

    pre = Preprocess.from_metadata(
        '{"channels": 3, "height": 4, "width": 2, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}'
    )
    buf = io.BytesIO()
    Image.new("L", (10, 20), 255).save(buf, format="PNG")
    x = pre.image_to_array(buf.getvalue())
    assert x.shape == (3, 4, 2) and x.dtype == np.float32
    assert np.allclose(x, 1.0)  # (1 - 0.5) / 0.5
    for bad in ['{"channels": 2, "height": 1, "width": 1, "mean": [0, 0], "std": [1, 1]}',
                '{"channels": 1}', "not json"]:  # fmt: skip
        with pytest.raises(ValueError, match=r"stride\.preprocess"):
            Preprocess.from_metadata(bad)
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")
    with pytest.raises(InvalidInput, match="expected PNG or JPEG"):
        pre.image_to_array(gif.getvalue())
