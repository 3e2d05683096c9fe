"""A real two-node Ray cluster: a head and a second node started with `ray start` (one
CPU each, their own temp folders), a local S3 server (moto) holding the packed digits
and the run store, and Stride's commands run as a user types them against it:
`stride data pack` into S3, `stride train --address ... --workers 2` and a 2 x 2
`stride sweep --address ... --scheduler asha` on the streamed data.

Ray 2.60 turns token authentication on for `ray start --head`: every node and driver
here gets the token through RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token), and HOME points
into the test's folder, so ~/.ray is never written. The test checks from Ray's state
API (the dashboard's) that the two training workers ran on different nodes, and that
nothing was written outside the bucket and Ray's temp folders: the working directory,
TMPDIR and HOME stay empty of Stride's files. Both nodes are stopped by their process
ids in a `finally`; the shared test Ray instance is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runstore import RunDir
from tests.pipeline.conftest import tiny_config

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "two-nodes"
START_TIMEOUT = 300  # seconds for `ray start` on a machine at twice its cores' load
RUN_TIMEOUT = 900  # seconds for one stride command there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(marker: str) -> list[int]:
    """Process ids of this cluster: those whose command line names `marker` (this test's
    temp folder: Ray's servers and raylets), and their descendants (Ray's workers, which
    retitle themselves `ray::...`)."""
    parents: dict[int, int] = {}
    named = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            status = (entry / "status").read_text()
            parents[pid] = int(status.split("\nPPid:\t", 1)[1].split("\n", 1)[0])
            if marker.encode() in (entry / "cmdline").read_bytes():
                named.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    found = set(named)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _stop(marker: str, grace: float = 15.0) -> None:
    """SIGTERM every process of this cluster, then SIGKILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _ours(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _ours(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _ours(marker):
            return


@pytest.fixture
def cluster() -> Iterator[dict[str, Any]]:
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    base = Path(tempfile.mkdtemp(prefix="s2n-", dir="/tmp"))  # short: Ray's socket paths
    dirs = {name: base / name for name in ("home", "work", "tmp", "head", "node", "cfg")}
    for d in dirs.values():
        d.mkdir()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    gcs, dashboard = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "HOME": str(dirs["home"]),
            "TMPDIR": str(dirs["tmp"]),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_worker_niceness": "0",  # as every Ray of the tests (tests/conftest.py)
            "AWS_ACCESS_KEY_ID": "stride-test",
            "AWS_SECRET_ACCESS_KEY": "stride-test",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]
    info = {"dirs": dirs, "env": env, "options": options, "address": f"127.0.0.1:{gcs}"}
    info["dashboard"] = f"http://127.0.0.1:{dashboard}"
    try:
        _run(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                f"--port={gcs}",
                f"--temp-dir={dirs['head']}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                *common,
            ],
            env,
            dirs["work"],
            START_TIMEOUT,
        )
        _run(
            [
                str(BIN / "ray"),
                "start",
                f"--address={info['address']}",
                f"--temp-dir={dirs['node']}",
                *common,
            ],
            env,
            dirs["work"],
            START_TIMEOUT,
        )
        yield info
    finally:
        _stop(str(base))
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _stride(cluster: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return _run([str(BIN / "stride"), *args], cluster["env"], cluster["dirs"]["work"])


def _state(cluster: dict[str, Any], code: str) -> Any:
    """Run `code` (which prints JSON) against the cluster's state API, in a subprocess
    that has the token; its answer, parsed."""
    result = _run([sys.executable, "-c", code], cluster["env"], cluster["dirs"]["work"], 120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_and_sweep_streamed_from_s3_on_two_nodes(cluster: dict[str, Any]) -> None:
    options, dirs = cluster["options"], cluster["dirs"]
    data = f"s3://{BUCKET}/digits?{options}"
    runs = f"s3://{BUCKET}/runs?{options}"
    # the bucket, made through the same file system the commands use
    from pipeline.datafiles import DataRoot

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "stride-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "stride-test")
        fs, _ = DataRoot.parse(f"s3://{BUCKET}?{options}&allow_bucket_creation=true").filesystem()
        fs.create_dir(BUCKET)
    config = dirs["cfg"] / "tiny.yaml"
    cfg = tiny_config(**{"training.epochs": 2, "data.name": "parquet", "data.root": data})
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    scaling = ["--set", "scaling.cpus_per_worker=0.75", "--set", "data.task_cpus=0.25"]

    _stride(cluster, "data", "pack", "digits", "--out", data, "--quiet")
    _stride(
        cluster,
        "train",
        "--config",
        str(config),
        "--address",
        cluster["address"],
        "--workers",
        "2",
        *scaling,
        "--runs",
        runs,
        "--experiment",
        "two",
        "--name",
        "r",
        "--quiet",
    )
    nodes = _state(
        cluster,
        "import json; from ray.util.state import list_nodes, list_actors\n"
        f"a = {cluster['dashboard']!r}\n"
        "workers = list_actors(address=a, filters=[('class_name', '=', 'RayTrainWorker')],"
        " detail=True, limit=1000)\n"
        "alive = [n.node_id for n in list_nodes(address=a) if n.state == 'ALIVE']\n"
        "print(json.dumps({'workers': [w.node_id for w in workers], 'alive': alive}))",
    )
    assert len(nodes["alive"]) == 2
    assert len(nodes["workers"]) == 2 and set(nodes["workers"]) == set(nodes["alive"])

    result = _stride(
        cluster,
        "sweep",
        "--config",
        str(config),
        "--address",
        cluster["address"],
        "--grid",
        "optimizer.name=sgd,adam",
        "--seeds",
        "2",
        "--scheduler",
        "asha",
        "--grace-epochs",
        "1",
        *scaling,
        "--runs",
        runs,
        "--experiment",
        "sw",
        "--json",
    )
    summary = json.loads(result.stdout)
    groups = summary["groups"]
    assert sorted(g["label"] for g in groups) == ["adam", "sgd"]
    assert sum(g["completed"] + g["stopped"] for g in groups) == 4  # ASHA may stop some
    assert sum(g["completed"] for g in groups) >= 1

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "stride-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "stride-test")
        run = RunDir.at(runs, "two", "r")
        done = run.read_summary()
        assert done is not None and done.status == "completed" and done.workers == 2
        assert run.read_config().data["source"]["streaming"] is True
    # Nothing outside the bucket and Ray's temp folders (head/ and node/): the working
    # directory and HOME stay empty; TMPDIR holds only the scratch folders libraries in
    # Ray's worker processes make (multiprocessing's pymp-*, torch's torchinductor_*),
    # no file of Stride's (checkpoint staging is removed after each run).
    assert sorted(p.name for p in dirs["work"].iterdir()) == []
    assert sorted(p.name for p in dirs["home"].rglob("*")) == []
    scratch = ("pymp-", "torchinductor_")
    left = [p.name for p in dirs["tmp"].iterdir() if not p.name.startswith(scratch)]
    assert left == []
