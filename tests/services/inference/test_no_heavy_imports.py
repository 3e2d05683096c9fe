"""The serving code runs without torch and Ray (the serving image has neither)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import services.common, services.inference.server, stride.commands.serve, stride.commands.predict
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray"))
print(",".join(heavy))
"""


def test_serving_imports_neither_torch_nor_ray() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
