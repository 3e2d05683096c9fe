"""bench/run.py in its smallest mode, once: every section runs, the table prints, the JSON is
written with the machine, versions and git revision. It checks the harness, not the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import rows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_writes_the_table_and_json(perf_analyzer: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("bench-smoke-*.json")
    doc = json.loads(path.read_text())
    assert doc["mode"] == "smoke" and doc["git"]["revision"]
    assert doc["machine"]["cores"] and doc["versions"]["onnxruntime"]
    sections = {"training", "data", "serving", "startup", "peer", "triton", "frontends"}
    assert set(doc["sections"]) == sections
    assert all("figures" in s for s in doc["sections"].values()), doc["sections"]
    figures = {(r["section"], r["figure"]) for r in doc["table"]}
    for section in ("training", "serving", "startup"):
        assert any(s == section for s, _ in figures), section
    assert any(s == "frontends" for s, _ in figures)
    measured = [r for r in doc["table"] if r["section"] not in ("peer", "triton")]
    assert all(r["ratio"] is not None and r["ratio"] > 0 for r in measured), measured
    assert "figure" in done.stdout and str(path) in done.stdout


def test_a_failed_section_is_one_row_and_the_rest_stay() -> None:
    table = rows.table(
        {
            "startup": {"error": "RuntimeError: server exited"},
            "peer": {"figures": {"skipped": "KServe is not installed"}},
        }
    )
    assert [r["figure"] for r in table] == ["FAILED", "KServe peer"]
    assert "server exited" in table[0]["note"]


def test_triton_rows_carry_both_servers_and_the_ratio() -> None:
    run = {"throughput": 100.0, "p50_us": 1000, "p99_us": 2000, "stable": 1.0}
    figures = {
        "triton_version": "nvidia-pytriton 0.7.0",
        "runs": {
            "digits@16/http": {
                "model": "digits", "concurrency": 16, "protocol": "http",
                "stride": {**run, "throughput": 50.0}, "triton": run, "ratio": 0.5,
            }
        },
    }  # fmt: skip
    (row,) = rows.table({"triton": {"figures": figures}})
    assert row["figure"] == "digits: stride serve infer/s, http, concurrency 16"
    assert (row["value"], row["baseline_value"], row["ratio"]) == (50.0, 100.0, 0.5)
    assert "p99 2.00 vs 2.00 ms" in row["note"]
    (skipped,) = rows.table({"triton": {"figures": {"skipped": "no tritonserver"}}})
    assert skipped["note"] == "no tritonserver"


def test_frontend_rows_divide_each_server_model_by_stride_serve() -> None:
    def run(kind: str, throughput: float) -> dict[str, float | str | int]:
        return {
            "kind": kind, "concurrency": 16, "throughput": throughput,
            "p50_us": 1000, "p99_us": 2000, "server_cores": 1.2,
        }  # fmt: skip

    figures = {"runs": {"aio-echo@16": run("aio-echo", 300.0), "stride@16": run("stride", 100.0)}}
    (row,) = rows.table({"frontends": {"figures": figures}})
    assert row["figure"] == "digits: grpc.aio, echo infer/s, concurrency 16"
    assert (row["value"], row["baseline_value"], row["ratio"]) == (300.0, 100.0, 3.0)
    assert "1.20 vs 1.20 cores" in row["note"]


def test_the_flame_graph_keeps_no_machine_path(tmp_path: Path) -> None:
    from bench.profile_serve import ROOT, portable

    svg = tmp_path / "serve.svg"
    spy = "/opt/venv/bin/py-spy"
    svg.write_text(
        f'<text id="title">{spy} record --pid 7 --output {svg}</text>'
        f"<title>infer_async ({ROOT}/services/inference/model.py:120)</title>"
    )
    portable(svg, spy)
    text = svg.read_text()
    assert "py-spy record --pid 7 --output serve.svg" in text
    assert "(services/inference/model.py:120)" in text
    assert str(ROOT) not in text and str(tmp_path) not in text
