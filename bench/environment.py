"""What a benchmark result must carry to mean anything: the machine, the versions, the revision."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "stride", "torch", "ray", "onnx", "onnxruntime", "onnxruntime-gpu", "grpcio", "protobuf",
    "numpy", "pillow",
)  # fmt: skip


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def machine() -> dict[str, Any]:
    """CPU, cores, memory, GPUs, OS and the load at the start."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "gpus": _gpus(),
        "load_average_start": load_average(),
    }


def _venv_version(venv: str, package: str) -> str | None:
    for meta in (ROOT / venv / "lib").glob(f"python3*/site-packages/{package}-*.dist-info"):
        return meta.name[len(package) + 1 : -len(".dist-info")]
    return None


def versions() -> dict[str, str | None]:
    """Python and the libraries that set the figures (the peers' from their own venvs)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["tritonclient (.venv-triton)"] = _venv_version(".venv-triton", "tritonclient")
    out["kserve (.venv-kserve)"] = _venv_version(".venv-kserve", "kserve")
    return out


def git() -> dict[str, Any]:
    """The revision measured, and whether the tree had uncommitted changes."""

    def run(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = [line for line in run("status", "--porcelain").splitlines() if line]
    return {
        "revision": run("rev-parse", "HEAD") or None,
        "describe": run("describe", "--always", "--dirty") or None,
        "uncommitted_files": len(changed),
    }
