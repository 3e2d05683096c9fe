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
    sections = {"training", "data", "serving", "scaling", "startup", "peer", "triton",
                "frontends"}  # fmt: skip
    assert set(doc["sections"]) == sections
    assert all("figures" in s for s in doc["sections"].values()), doc["sections"]
    figures = {(r["section"], r["figure"]) for r in doc["table"]}
    for section in ("training", "serving", "scaling", "startup"):
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


def test_scaling_rows_divide_each_worker_count_by_the_first() -> None:
    def run(throughput: float) -> dict[str, float]:
        return {"throughput": throughput, "p50_us": 1000.0, "p99_us": 2000.0,
                "server_cores": 1.5, "client_cores": 0.4, "load_average": 2.0}  # fmt: skip

    figures = {
        "connections": 64,
        "models": {
            "digits": {
                "runs": {1: [run(100.0), run(120.0)], 2: [run(180.0), run(200.0)]},
                "median": {1: 110.0, 2: 190.0},
                "over_first": {1: 1.0, 2: 190 / 110},
            }
        },
    }
    first, second = rows.table({"scaling": {"figures": figures}})
    assert first["figure"] == "digits: --workers 1 infer/s, 64 connections"
    assert (second["value"], second["baseline_value"]) == (190.0, 110.0)
    assert second["ratio"] == pytest.approx(190 / 110)
    assert "runs 180, 200" in second["note"] and "load 2.0, 2.0" in second["note"]


def test_triton_rows_name_each_worker_count_and_the_echo_ceiling() -> None:
    run = {"throughput": 100.0, "p50_us": 1000, "p99_us": 2000, "stable": 1.0}
    figures = {
        "triton_version": "tritonserver 2.51.0",
        "runs": {
            "digits@16/grpc": {
                "model": "digits", "concurrency": 16, "protocol": "grpc",
                "stride": {**run, "throughput": 50.0}, "triton": run, "ratio": 0.5,
                "stride_workers": {1: {**run, "throughput": 50.0}, 2: {**run, "throughput": 80.0}},
                "echo": {**run, "throughput": 60.0},
            }
        },
    }  # fmt: skip
    table = rows.table({"triton": {"figures": figures}})
    named = {(r["figure"], r["baseline"].split(" ")[0]): r["ratio"] for r in table}
    assert (
        named[("digits: stride serve --workers 1 infer/s, grpc, concurrency 16", "Triton")] == 0.5
    )
    assert (
        named[("digits: stride serve --workers 2 infer/s, grpc, concurrency 16", "Triton")] == 0.8
    )
    over_echo = ("digits: stride serve --workers 2 infer/s, grpc, concurrency 16", "grpc.aio")
    assert named[over_echo] == pytest.approx(80 / 60)
    assert (
        named[("digits: grpc.aio echo, no model, infer/s, grpc, concurrency 16", "Triton")] == 0.6
    )
