"""The analysis service runs in the serving image: no torch, no Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHECK = """
import sys
sys.modules["torch"] = None  # any import of torch or ray now raises ImportError
sys.modules["ray"] = None
import services.analysis.server, services.analysis.plots, services.analysis.watch
import stride.commands.compare, stride.commands.serve_analysis
"""


def test_analysis_imports_without_torch_or_ray() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
