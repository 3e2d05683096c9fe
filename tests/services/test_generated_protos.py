"""The committed code in services/generated matches protos/ (regenerated with the pinned protoc)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_field_numbers_follow_the_specification() -> None:
    # Spot checks of numbers that clients depend on (KServe v2 / Triton).
    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import model_config_pb2 as mc

    fields = pb.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert fields["raw_input_contents"].number == 7
    assert fields["outputs"].number == 6
    assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == 6
    assert pb.InferTensorContents.DESCRIPTOR.fields_by_name["fp32_contents"].number == 6
    assert pb.ModelStatistics.DESCRIPTOR.fields_by_name["batch_stats"].number == 7
    config = mc.ModelConfig.DESCRIPTOR.fields_by_name
    assert config["dynamic_batching"].number == 11
    assert config["backend"].number == 17
    assert mc.ModelOutput.DESCRIPTOR.fields_by_name["label_filename"].number == 4
    assert mc.ModelInstanceGroup.DESCRIPTOR.fields_by_name["kind"].number == 4
    assert mc.DataType.Value("TYPE_STRING") == 13


def test_analysis_field_numbers_only_grow() -> None:
    # Fields added for issue 12 keep the numbers clients were built with.
    from services.generated.stride.analysis.v1 import analysis_pb2 as pb

    assert pb.ExperimentInfo.DESCRIPTOR.fields_by_name["stopped"].number == 7
    series = pb.LayerSeries.DESCRIPTOR.fields_by_name
    assert (series["std"].number, series["kind"].number, series["depth"].number) == (3, 4, 5)
    flow = pb.GroupGradientFlow.DESCRIPTOR.fields_by_name
    assert (flow["log10_ratio"].number, flow["first_layer"].number) == (7, 8)
    render = pb.RenderComparisonRequest.DESCRIPTOR.fields_by_name
    assert (render["dpi"].number, render["profile"].number, render["win_matrix"].number) == (
        4,
        5,
        8,
    )
    service = pb.DESCRIPTOR.services_by_name["AnalysisService"].methods_by_name
    assert {"PerformanceProfile", "LearningRateSensitivity", "ExpectedBest", "WinMatrix",
            "DeadUnits"} <= set(service)  # fmt: skip
