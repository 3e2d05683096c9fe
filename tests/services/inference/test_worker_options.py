"""`stride serve --workers N` without starting it: how many workers, each one's share of
every limit, the CPU limit they divide, and how their statistics add up."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition, ModelNotFound, ServiceError
from services.inference import runtime
from services.inference.metrics import WorkerCalls, render_page
from services.inference.stats import (
    BatchStats,
    Duration,
    ModelStats,
    merge_snapshots,
    snapshot_from_dict,
    snapshot_to_dict,
)
from services.inference.worker_link import Channel, error_from_dict, error_to_dict
from stride.commands import _serve_workers, serve


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8])
@pytest.mark.parametrize("value", [1, 5, 16, 64, 513])
def test_the_shares_add_up_to_the_flag(count: int, value: int) -> None:
    parts = [_serve_workers.share(value, count, i) for i in range(count)]
    assert min(parts) >= 1
    if value >= count:
        assert sum(parts) == value and max(parts) - min(parts) <= 1
    else:
        assert parts == [1] * count  # fewer than the workers: one each


def test_each_worker_gets_its_share_of_every_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_limit", lambda: 8)
    args = parse([
        "--max-connections", "512", "--http-max-connections", "100",
        "--http-max-connections-per-peer", "3", "--max-concurrent-requests", "9",
        "--max-streams", "32", "--max-health-watches", "16", "--handler-threads", "128",
        "--http-threads", "64", "--http-memory-budget-mb", "400", "--max-message-mb", "64",
        "--metrics-port", "9", "--poll-interval", "5",
    ])  # fmt: skip
    ports = {"grpc": 7001, "http": 7000, "health": 7002}
    shares = [_serve_workers.worker_args(args, 4, i, ports) for i in range(4)]
    divided = ("max_connections", "http_max_connections", "max_concurrent_requests",
               "max_streams", "max_health_watches", "handler_threads", "http_threads")  # fmt: skip
    for name in divided:
        assert sum(getattr(s, name) for s in shares) == getattr(args, name), name
    assert [s.http_max_connections_per_peer for s in shares] == [1, 1, 1, 1]  # 3 < 4 workers
    assert {s.http_memory_budget_mb for s in shares} == {100.0}
    assert {s.http_memory_budget_mb_per_peer for s in shares} == {64.0}  # at least a message
    assert {s.max_decodes for s in shares} == {2}  # one per core: 8 cores, 4 workers
    mine = shares[0]
    assert (mine.port, mine.http_port, mine.health_port) == (7001, 7000, 7002)
    assert (mine.metrics_port, mine.poll_interval, mine.workers) == (-1, 0, 1)  # the supervisor's
    assert args.max_connections == 512  # the server's own options are left alone
    back = _serve_workers.from_json(_serve_workers.to_json(mine))
    assert back == mine and isinstance(back.repository, Path)


def test_an_unlimited_concurrency_stays_unlimited() -> None:
    shares = _serve_workers.worker_args(parse([]), 2, 0, {"grpc": 1, "http": -1})
    assert shares.max_concurrent_requests is None and shares.http_port == -1


def test_the_default_is_one_worker_per_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, workers in ((1, 1), (2, 1), (3, 1), (4, 2), (16, 8)):
        monkeypatch.setattr(runtime, "cpu_limit", lambda cores=cores: cores)
        assert _serve_workers.worker_count(0) == workers
    assert _serve_workers.worker_count(5) == 5
    with pytest.raises(ValueError, match="--workers must be >= 0"):
        _serve_workers.worker_count(-1)


def test_more_than_one_worker_is_refused_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.inference import shared_ports

    monkeypatch.setattr(shared_ports, "reuse_port_supported", lambda: False)
    with pytest.raises(ValueError, match=r"only Linux has; on .* use --workers 1"):
        _serve_workers.worker_count(2)
    assert _serve_workers.worker_count(1) == 1


def test_the_workers_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIDE_WORKERS", "3")
    assert parse([]).workers == 3
    monkeypatch.delenv("STRIDE_WORKERS")
    assert parse([]).workers == 0  # automatic


def _cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> float | None:
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup").write_text(membership)
    return runtime.cgroup_cpu_quota(tmp_path / "fs", tmp_path / "cgroup")


def test_the_cgroup_cpu_quota_v2_and_v1(tmp_path: Path) -> None:
    v2 = "0::/kubepods/pod1/c1\n"
    assert _cgroup(tmp_path / "a", v2, {"kubepods/pod1/c1/cpu.max": "150000 100000\n"}) == 1.5
    # A container with its own cgroup namespace sees its cgroup at the mount's root.
    assert _cgroup(tmp_path / "b", "0::/\n", {"cpu.max": "200000 100000\n"}) == 2.0
    assert _cgroup(tmp_path / "c", v2, {"kubepods/pod1/c1/cpu.max": "max 100000\n"}) is None
    # The smallest quota on the way up counts (a pod limit above the container's).
    files = {"kubepods/cpu.max": "100000 100000", "kubepods/pod1/c1/cpu.max": "400000 100000"}
    assert _cgroup(tmp_path / "d", v2, files) == 1.0
    v1 = "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n"
    files = {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    assert _cgroup(tmp_path / "e", v1, files) == 3.0
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert _cgroup(tmp_path / "f", "2:cpu:/\n", files) is None
    assert _cgroup(tmp_path / "g", "garbage\n", {}) is None
    assert runtime.cgroup_cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_the_cpu_limit_is_the_affinity_capped_by_the_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    for quota, cores in ((None, 16), (2.0, 2), (1.5, 2), (0.25, 1), (64.0, 16)):
        monkeypatch.setattr(runtime, "cgroup_cpu_quota", lambda q=quota: q)
        assert runtime.cpu_limit() == cores


def _stats(rows: int, runs: int, batch: int, last_ms: int) -> ModelStats:
    from services.inference.batcher import BatchTimes

    stats = ModelStats()
    for _ in range(runs):
        stats.record_success(rows, total_ns=1000, queue_ns=10)
        stats.record_batch(BatchTimes(batch_size=batch, input_ns=1, infer_ns=100, output_ns=2))
    stats.record_failure(total_ns=7)
    stats._last_ms = last_ms
    return stats


def test_statistics_of_several_processes_add_up() -> None:
    a = _stats(rows=2, runs=3, batch=2, last_ms=50).snapshot(pending=1)
    b = _stats(rows=1, runs=5, batch=1, last_ms=90).snapshot(pending=2)
    total = merge_snapshots([snapshot_from_dict(snapshot_to_dict(s)) for s in (a, b)])
    assert total.last_inference_ms == 90 and total.pending == 3
    assert (total.inference_count, total.execution_count) == (2 * 3 + 5, 8)
    assert (total.success.count, total.success.ns) == (8, 8000)
    assert (total.fail.count, total.fail.ns) == (2, 14)
    assert (total.queue.count, total.compute_infer.ns) == (8, 800)
    assert total.batches == {
        1: BatchStats(Duration(5, 5), Duration(5, 500), Duration(5, 10)),
        2: BatchStats(Duration(3, 3), Duration(3, 300), Duration(3, 6)),
    }
    assert merge_snapshots([]) == ModelStats().snapshot()


def test_the_metrics_page_names_each_worker_s_calls() -> None:
    page = render_page([], None, [WorkerCalls(0, 11, {"grpc": 3, "http": 0})])
    assert "stride_workers 1" in page
    assert 'stride_worker_requests{worker="0",pid="11",protocol="grpc"} 3' in page
    assert "stride_worker" not in render_page([], None)  # one process: as before


def test_the_link_carries_domain_errors_and_messages() -> None:
    for exc in (ModelNotFound("no model 'x'"), FailedPrecondition("failed to load")):
        back = error_from_dict(error_to_dict(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    unexpected = error_from_dict(error_to_dict(RuntimeError("/secret/path")))
    assert type(unexpected) is ServiceError and "/secret" not in str(unexpected)
    assert type(error_from_dict({"type": "os.system", "message": "m"})) is ServiceError
    left, right = socket.socketpair()
    a, b = Channel(left), Channel(right)
    assert a.send({"op": "x", "data": [1, "two"]})
    assert b.receive() == {"op": "x", "data": [1, "two"]}
    a.close()
    assert b.receive() is None and not b.send({"op": "y"})
    b.close()
