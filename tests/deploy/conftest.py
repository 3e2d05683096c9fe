"""Fixtures for the offline checks of deploy/: rendered overlays, tools, the KubeRay CRDs.

Nothing here needs a cluster, a Docker engine or the network: kubectl (with its
built-in kustomize), kubernetes-validate, yamllint and hadolint come from the `dev`
dependency group and run locally. The KubeRay CRDs come from `shared/crds`, which
lies beside the repository (`<repo>/../shared`) in a checkout and in CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
JOBS = DEPLOY / "k8s" / "jobs"  # one-off Jobs, applied by hand, not part of the overlays
CRD_DIR = REPO_ROOT.parent / "shared" / "crds"


def tool(name: str) -> str:
    """The path of a dev tool: the venv's own copy first (make test runs .venv/bin/python)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: it is in pyproject's dev group, run `make setup`")
    return found


def run_tool(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders for an overlay (fails the test if it cannot)."""
    path = DEPLOY / "k8s" / "overlays" / overlay
    result = run_tool([tool("kubectl"), "kustomize", str(path)])
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay's rendered objects, rendered once per session."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn."""
    return str(request.param)


@pytest.fixture
def docs(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> list[dict[str, Any]]:
    """The current overlay's rendered objects."""
    return rendered[overlay]


@pytest.fixture(scope="session")
def jobs() -> list[dict[str, Any]]:
    """The objects of deploy/k8s/jobs/*.yaml."""
    found = []
    for path in sorted(JOBS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert found, f"no Jobs in {JOBS}"
    return found


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """shared/crds beside the repository; skipped (with the reason) where it is absent."""
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (shared/ lies beside the repository)")
    return CRD_DIR
