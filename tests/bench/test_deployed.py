"""bench/deployed.py: the servers of the resilience suite and the soak are the manifests'
command lines, not copies of them, and run under the pod's memory limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.deployed import ROOT, Deployed, Memory, flag, pod, quantity

BASE = ROOT / "deploy" / "k8s" / "base"


def _container(name: str) -> dict:
    doc = yaml.safe_load((BASE / f"{name}-deployment.yaml").read_text())
    return doc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", ["inference", "analysis"])
def test_the_pod_is_read_from_the_manifest(name: str) -> None:
    container = _container(name)
    found = pod(f"stride-{name}")
    assert found.argv == [*container["command"], *container["args"]]
    assert found.memory_limit == quantity(container["resources"]["limits"]["memory"]) == 2**30
    assert found.probe_timeouts["readiness"] == container["readinessProbe"].get("timeoutSeconds", 1)
    assert set(found.mounts.values()) >= {"tls", "auth", "scratch"}


@pytest.mark.parametrize("name", ["inference", "analysis"])
def test_only_ports_and_mounted_paths_are_rewritten(name: str, tmp_path: Path) -> None:
    found = pod(f"stride-{name}")
    volumes = {v: tmp_path / v for v in found.mounts.values()}
    ports: dict[int, int] = {}
    rewritten = [Deployed._rewrite(a, found, volumes, ports) for a in found.argv]
    for before, after in zip(found.argv, rewritten, strict=True):
        if before == after:
            continue
        name_before, value = before.split("=", 1)
        name_after, local = after.split("=", 1)
        assert name_before == name_after  # the same flag, whatever its value became
        if name_before.endswith("-port"):
            assert ports[int(value)] == int(local)
        else:
            assert local.startswith(str(tmp_path)) and any(
                value.startswith(mount) for mount in found.mounts
            )
    assert not any(str(a).count("/etc/stride") for a in rewritten)
    assert flag(rewritten, "--grace-period") == flag(found.argv, "--grace-period")


def test_the_memory_limit_is_a_cgroup_where_the_machine_allows() -> None:
    memory = Memory.make(64 * 2**20, "test")
    try:
        if memory.mode == "rss":
            pytest.skip("no writable cgroup v1 memory controller here: RSS is measured instead")
        # A process that allocates past the limit inside it is killed by the kernel.
        hog = "b = bytearray(200 * 2**20); print(len(b))"
        done = subprocess.run(
            memory.wrap([sys.executable, "-c", hog]), capture_output=True, timeout=60
        )
        assert done.returncode != 0
        assert memory.figures()["oom_kills"] >= 1
    finally:
        memory.close()
