"""tritonclient.grpc and perf_analyzer (from .venv-triton, made by `make test`) work unchanged."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.servers import PERF_ANALYZER, perf_analyzer_env, perf_analyzer_unusable
from services.inference.server import InferenceServer
from tests.services.inference.onnx_models import LABELS, expected

ROOT = Path(__file__).resolve().parents[3]
TRITON_PY = ROOT / ".venv-triton" / "bin" / "python"

needs_tritonclient = pytest.mark.skipif(
    not TRITON_PY.exists(), reason="no .venv-triton (run `make triton-client`)"
)


@needs_tritonclient
def test_tritonclient_grpc_works_unchanged(server: InferenceServer, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "digit.png"
    buf = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buf, format="PNG")
    png.write_bytes(buf.getvalue())
    script = Path(__file__).with_name("triton_client_check.py")
    done = subprocess.run(
        [str(TRITON_PY), str(script), f"127.0.0.1:{server.port}", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert "classification" in seen["extensions"]
    assert seen["inputs"] == [["input", "FP32", [-1, 1, 8, 8]]]
    assert seen["max_batch_size"] == 8
    x = np.asarray(seen["x"], np.float32)
    logits, probs = expected(x, seed=1)
    assert np.allclose(seen["logits"], logits, atol=1e-4)
    assert np.allclose(seen["probabilities"], probs, atol=1e-5)
    assert seen["response_id"] == "interop-1"
    for row, p in zip(seen["classification"], probs, strict=True):
        best = int(np.argmax(p))
        assert row[0] == f"{p[best]:f}:{best}:{LABELS[best]}"
        assert len(row) == 3
    assert len(seen["image_classes"]) == 3
    assert seen["inference_count"] >= 5
    assert seen["index"] == ["digits"]
    assert not seen["ready_after_unload"] and seen["ready_after_load"]
    assert seen["unknown_model_status"] == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in seen["unknown_model_message"]


def _perf_analyzer(server: InferenceServer, port: int, protocol: str) -> None:
    """A short perf_analyzer run over `protocol`; every request must succeed."""
    reason = perf_analyzer_unusable()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        [str(PERF_ANALYZER), "-m", "digits", "-u", f"127.0.0.1:{port}", "-i", protocol,
         "-b", "1", "--concurrency-range", "4", "-p", "500", "-r", "4", "-s", "100",
         "--input-data", "zero"],
        capture_output=True, text=True, timeout=120, env=perf_analyzer_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Throughput:" in done.stdout
    stats = server.repository.get("digits").stats.snapshot()
    assert stats.inference_count > 100 and stats.fail.count == 0


@needs_tritonclient
@pytest.mark.slow
def test_perf_analyzer_runs_against_the_server(server: InferenceServer) -> None:
    _perf_analyzer(server, server.port, "grpc")


@needs_tritonclient
@pytest.mark.slow
def test_perf_analyzer_runs_over_http(repo: Path) -> None:
    from services.common import ServerOptions
    from services.inference.rest_server import HttpOptions

    options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    http = HttpOptions(host="127.0.0.1", port=0, grace_period=1)
    server = InferenceServer(repo, options, metrics=None, http=http).start()
    assert server.http is not None
    try:
        _perf_analyzer(server, server.http.port, "http")
        assert any(k[:2] == ("http", "infer") for k in server.counters.snapshot())
    finally:
        server.stop(0)
