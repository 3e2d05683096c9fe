"""bench/triton_peer.py's conversion of a Stride repository for Triton's Python backend
(runs without Triton; the conformance suite starts the real one)."""

from __future__ import annotations

import ast
from pathlib import Path

from google.protobuf import text_format

from bench import triton_peer
from services.generated.inference import model_config_pb2 as mc
from tests.services.inference.onnx_models import add_model


def test_conversion_keeps_the_config_and_links_the_onnx_file(tmp_path: Path) -> None:
    source = tmp_path / "repository"
    add_model(source, "digits", versions=(1, 2))
    site = tmp_path / "site-packages"
    names = triton_peer.triton_repository(source, tmp_path / "triton", site_packages=site)
    assert names == ["digits"]
    out = tmp_path / "triton" / "digits"
    config = text_format.Parse((out / "config.pbtxt").read_text(), mc.ModelConfig())
    original = text_format.Parse((source / "digits" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.backend, config.platform) == ("python", "")
    config.backend, config.platform = "", original.platform
    assert config == original  # every other field as exported
    assert (out / "labels.txt").read_text() == (source / "digits" / "labels.txt").read_text()
    for version in ("1", "2"):
        onnx_file = out / version / "model.onnx"
        assert onnx_file.resolve() == (source / "digits" / version / "model.onnx").resolve()
        code = (out / version / "model.py").read_text()
        ast.parse(code)  # valid Python for the backend's stub
        assert repr(str(site)) in code and "'model.onnx'" in code
