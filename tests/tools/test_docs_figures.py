"""tools/docs_figures.py: the bench's tables in README.md and docs/performance.md.

The tables in the docs must be what the renderer wrote (a hand edit changes the digest
in the marker), parse as Markdown tables and name the git revision they were measured
at; the renderer turns a bench JSON into the same bytes every time, keeps a table that
no run measured, and takes a full run over a quicker one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import run
from tools import docs_figures

ROOT = Path(__file__).resolve().parents[2]


def _row(
    section: str, figure: str, value: float, baseline: str, base: float, note: str = ""
) -> dict:
    return {"section": section, "figure": figure, "value": value, "baseline": baseline,
            "baseline_value": base, "ratio": value / base, "note": note}  # fmt: skip


RUN: dict[str, Any] = {
    "schema": 1,
    "mode": "full",
    "gpu": False,
    "command": "run.py",
    "started_at": "2026-12-01T10:00:00Z",
    "machine": {"cpu": "Example CPU", "cores": 2, "memory_gb": 23.5, "gpus": [],
                "load_average_start": [1.5, 1.0, 1.0], "load_average_end": [2.25, 1.0, 1.0]},
    "git": {"revision": "0123456789abcdef0123456789abcdef01234567", "uncommitted_files": 0},
    "versions": {"stride": "0.9.1"},
    "sections": {"training": {"figures": {}}, "serving": {"figures": {}},
                 "peer": {"error": "RuntimeError: no KServe"}},
    "table": [
        _row("training", "Ray, 1 worker: images/s", 161.2, "plain loop images/s", 157.0, "cpu"),
        _row("serving", "cnn: stride serve infer/s, concurrency 16", 612.4,
             "in-process ORT, batch 32", 1041.0, "p50 25.29 ms | p99 43.70 ms"),
        _row("serving", "cnn: p50 latency at concurrency 1 (us)", 2008.0,
             "in-process batch-1 compute (us)", 1039.0),
        {"section": "peer", "figure": "FAILED", "value": None, "baseline": "",
         "baseline_value": None, "ratio": None, "note": "RuntimeError: no KServe"},
    ],
}  # fmt: skip

SERVING = """\
From `bench/run.py` (full), 2026-12-01, on Example CPU, 2 cores, 23.5 GB; load 1.5 -> 2.25; git 0123456.

| figure | value | baseline | base | ratio | note |
| --- | ---: | --- | ---: | ---: | --- |
| cnn: stride serve infer/s, concurrency 16 | 612 | in-process ORT, batch 32 | 1,041 | 0.588 | p50 25.29 ms \\| p99 43.70 ms |
| cnn: p50 latency at concurrency 1 (us) | 2,008 | in-process batch-1 compute (us) | 1,039 | 1.93 |  |
"""  # noqa: E501

DOC = """\
# Figures

<!-- figures:serving -->
<!-- /figures:serving -->

<!-- figures:peer -->
| an old table | git abcdef0 |
| --- | --- |
<!-- /figures:peer -->

<!-- figures:headline -->
<!-- /figures:headline -->
"""


def _runs(tmp_path: Path, *docs: dict[str, Any]) -> list[docs_figures.Run]:
    paths = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"bench-{doc['mode']}-{i}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
    return docs_figures.load_runs(paths)


def test_a_section_renders_to_the_same_table_every_time(tmp_path: Path) -> None:
    best = docs_figures.latest(_runs(tmp_path, RUN))
    assert sorted(best) == ["serving", "training"]  # the failed peer section is not measured
    assert docs_figures.render_section(best["serving"], "serving") == SERVING
    text, report = docs_figures.update(DOC, best)
    assert docs_figures.update(text, best)[0] == text
    assert report == ["serving: updated", "peer: kept (no run measured it)", "headline: updated"]
    assert SERVING in text and "| an old table | git abcdef0 |" in text
    headline = text.split("<!-- figures:headline")[1]
    assert "| Ray Train, 1 worker: images/s (reference CNN) | 161 | plain loop images/s | 157 |" \
        in headline  # fmt: skip
    assert "| `stride serve`, digits, gRPC, concurrency 16: infer/s | not measured |" in headline
    assert (
        "- training, serving: `make bench`, 2026-12-01, on Example CPU, 2 cores, "
        "23.5 GB; load 1.5 -> 2.25; Stride 0.9.1\n<!-- /figures:headline -->"
    ) in headline
    assert "git " not in headline  # README.md names no commit
    # the kept block is left as it was, without a digest: a hand edit, and it says so
    (problem,) = docs_figures.problems(text)
    assert problem.startswith("peer: edited by hand")


def test_a_full_run_wins_over_a_newer_quick_one_and_a_newer_full_one_over_both(
    tmp_path: Path,
) -> None:
    quick = copy.deepcopy(RUN) | {"mode": "quick", "started_at": "2026-12-02T10:00:00Z"}
    newer = copy.deepcopy(RUN) | {"started_at": "2026-12-03T10:00:00Z"}
    newer["git"] = {"revision": "fedcba9876543210", "uncommitted_files": 3}
    best = docs_figures.latest(_runs(tmp_path, RUN, quick))
    assert best["serving"].doc["mode"] == "full"
    best = docs_figures.latest(_runs(tmp_path, RUN, quick, newer))
    text = docs_figures.render_section(best["serving"], "serving")
    assert "git fedcba9 + 3 uncommitted files" in text


def test_a_section_never_measured_says_so(tmp_path: Path) -> None:
    text, report = docs_figures.update("<!-- figures:triton -->\n<!-- /figures:triton -->\n", {})
    assert docs_figures.NOT_MEASURED in text and report == ["triton: kept (no run measured it)"]
    assert docs_figures.problems(text) == []


def test_a_hand_edit_and_a_table_without_a_revision_show(tmp_path: Path) -> None:
    best = docs_figures.latest(_runs(tmp_path, RUN))
    text, _ = docs_figures.update(DOC, best)
    edited = text.replace("| 612 |", "| 700 |")
    assert any("serving: edited by hand" in p for p in docs_figures.problems(edited))
    block = docs_figures._block("serving", "| figure | value |\n| --- | ---: |\n| a | 1 |\n")
    assert docs_figures.problems(block) == ["serving: names no git revision"]
    with pytest.raises(ValueError, match="a row of 3 cells under 2"):
        docs_figures.parse_tables("| a | b |\n| --- | --- |\n| 1 | 2 | 3 |\n")


@pytest.mark.parametrize("doc", docs_figures.DOCS)
def test_the_tables_in_the_docs_are_as_rendered_and_name_a_revision(doc: str) -> None:
    text = (ROOT / doc).read_text()
    blocks = list(docs_figures.MARKER.finditer(text))
    assert blocks, f"{doc} has no generated tables"
    assert docs_figures.problems(text) == [], (
        f"{doc}: the tables between <!-- figures:... --> markers are written by "
        "`make docs-figures` from results/bench-*.json; edit bench/rows.py or "
        "tools/docs_figures.py and rerun it rather than the tables"
    )
    for block in blocks:  # a misspelt section would never be filled
        name = block["name"]
        assert name == "headline" or name.removeprefix("gpu/") in run.SECTIONS, name


def test_make_docs_figures_rewrites_only_the_blocks(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    doc = DOC.replace("| an old table | git abcdef0 |\n| --- | --- |\n", "")
    (tmp_path / "README.md").write_text("# Stride\n\n" + doc)
    (tmp_path / "docs" / "performance.md").write_text("text stays\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench-full-1.json").write_text(json.dumps(RUN))
    args = ["--root", str(tmp_path), "--results", str(tmp_path / "results")]
    assert docs_figures.main(args) == 0
    assert (tmp_path / "docs" / "performance.md").read_text() == "text stays\n"
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Stride\n\n# Figures\n") and SERVING in readme
    assert docs_figures.NOT_MEASURED in readme  # the peer section failed in the only run
    assert docs_figures.main([*args, "--check"]) == 0
