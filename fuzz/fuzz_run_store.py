"""atheris: a run's config.json, metrics.jsonl and summary.json as the analysis service reads them.

The input is `config NUL metrics NUL summary`; an empty part means the file is
absent. Scans must never raise; RPCs (ListRuns, GetRun, CompareRuns, GradientFlow)
may only answer with the documented domain errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import atheris

with atheris.instrument_imports(include=["services.analysis", "fuzz"]):
    from fuzz import targets
    from fuzz.harness import main, split
    from fuzz.workspace import GOOD_CONFIG, GOOD_EPOCHS, GOOD_SUMMARY

TOKENS = [
    b'"epoch":', b'"val_accuracy":', b'"grad_norms":', b'"layer":', b'"norm":', b'"status":',
    b'"completed"', b'"failed"', b'"config":', b'"seed":', b'"optimizer":', b"NaN", b"Infinity",
    b"-Infinity", b"null", b"1e999", b"\n",
]  # fmt: skip


def seeds() -> Iterable[bytes]:
    config = json.dumps({**GOOD_CONFIG, "run_id": targets.RUN_ID}).encode()
    metrics = "".join(json.dumps(e) + "\n" for e in GOOD_EPOCHS).encode()
    summary = json.dumps(GOOD_SUMMARY).encode()
    return [
        b"\0".join([config, metrics, summary]),
        b"\0".join([config, metrics, b""]),
        b"\0".join([config, metrics[:-20], b""]),
        b"\0".join([b"", b"", json.dumps({"status": "failed", "reason": "x"}).encode()]),
        b"\0".join([config, metrics.replace(b'"epoch": 2', b'"epoch": 3'), summary]),
    ]


def test_one_input(data: bytes) -> None:
    config, metrics, summary = split(data, 3)
    targets.check_run_store(config or None, metrics or None, summary or None)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
