"""`stride data pack` and `stride data describe` as a user runs them (in-process `main`):
the digits packed into a folder, described, packed again (a no-op), and the one-line
errors of a folder that holds no packed data set or another pack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stride.cli import main


def test_pack_describe_and_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    assert main(["data", "pack", "digits", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "packed 1,797 images" in text and "train   1,257" in text
    assert main(["data", "describe", str(out)]) == 0
    described = capsys.readouterr().out
    assert "1x8x8 uint8, raw; 10 classes" in described and "manifest checksum:" in described
    assert main(["data", "describe", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["format"] == "stride-parquet" and manifest["splits"]["val"]["rows"] == 270
    shards = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert shards == [
        "test/part-00000.parquet",
        "train/part-00000.parquet",
        "val/part-00000.parquet",
    ]
    assert main(["data", "pack", "digits", "--out", str(out), "--quiet"]) == 0
    assert "already packed" in capsys.readouterr().out
    code = main(["data", "pack", "digits", "--out", str(out), "--set", "data.split_seed=1"])
    assert code == 2
    assert "already holds a packed data set" in capsys.readouterr().err
    assert main(["data", "describe", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest.json" in err[0]
