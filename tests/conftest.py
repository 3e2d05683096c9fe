"""Fixtures shared across the test tree, and the session's own temporary folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set by pytest_configure: the folder every temporary file of this session lives under.
_SESSION_TMP: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Give this test process a temporary folder of its own (TMPDIR, tempfile, Ray's).

    The suite checks what it leaves behind (checkpoint staging folders, Ray's session
    files); on a machine where other work runs beside it (a second checkout's suite,
    a CI neighbour) those checks would count the neighbours' files, and two local Ray
    instances would share `/tmp/ray`. Servers, `stride` commands and Ray's workers
    started by the tests inherit TMPDIR. The name stays short: Ray's Unix sockets live
    under it and a socket path may not exceed 107 bytes.
    """
    global _SESSION_TMP
    # Ray starts its workers at nice 15 by default: on a machine whose other work runs at
    # nice 0 (a neighbour, tools/busy.sh, the other xdist worker) its training workers get
    # a few percent of a core and a Ray test takes many times longer. Every Ray the tests
    # start (the shared instance, `stride` commands in subprocesses) inherits this.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # Several test processes share the cores (pytest-xdist, `make test`): one
        # intra-op thread each. With one per core in every process, OpenMP's threads
        # spin-wait for cores the other processes hold, and the same tests take about
        # 40% more CPU time. Ray's workers set their own; an explicit setting wins.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    parent = Path(os.environ.get("TMPDIR") or "/tmp")
    _SESSION_TMP = Path(tempfile.mkdtemp(prefix="st-", dir=parent))
    os.environ["TMPDIR"] = str(_SESSION_TMP)
    tempfile.tempdir = None  # recomputed from TMPDIR on the next call
    # `stride serve` started by a test is one process, whatever the machine's cores (its
    # default is one per two cores); tests of several pass --workers.
    os.environ["STRIDE_WORKERS"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_TMP is not None:
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    from pipeline.ray_train import ensure_ray

    # Object store credentials come from the environment of every Ray node, as on a real
    # cluster; the local S3 server of the tests (moto) takes any.
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "stride-test"),
        ("AWS_SECRET_ACCESS_KEY", "stride-test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    resources = ensure_ray()
    yield resources
    ray.shutdown()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip cleanly on machines without CUDA; files with a `slow` test
    run first.

    `make test` hands whole files to its xdist workers (`--dist loadfile`, so a module's
    fixtures, a server or a trained run, are built once). Files are handed out in this
    order: the long ones first, the short ones fill the gaps at the end.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if marked and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in marked:
            item.add_marker(skip)
