"""What parsed runs cost, counted (runstore.budget) and bounded (RunStore(memory_bytes=)).

The counts are checked against tracemalloc, the allocator's own measure: the bound of
a parse must never be below what the parse really allocates, and a parsed run's count
must be close to what it really keeps.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runstore import (
    ConfigRecord,
    EpochRecord,
    MalformedRun,
    ReaderBusy,
    Run,
    RunDir,
    RunStore,
    RunTooLarge,
    parse_metrics,
)
from runstore.budget import MemoryBudget, json_bound
from runstore.files import LocalFiles
from runstore.records import MAX_LINE_BYTES

MiB = 2**20


def allocated(make: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes `make()` allocates and keeps (tracemalloc), and what it made."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        return tracemalloc.get_traced_memory()[0] - before, made
    finally:
        tracemalloc.stop()


HOSTILE = {
    "empty objects": b"[" + b",".join([b"{}"] * 50_000) + b"]",
    "empty lists": b"[" + b",".join([b"[]"] * 50_000) + b"]",
    "nested": b"[" * 500 + b"]" * 500,
    "many keys": b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(50_000)) + b"}",
    "floats": b"[" + b",".join([b"0.5"] * 50_000) + b"]",
    "wide strings": json.dumps(["a" * 40 + "\U0001f600"] * 5_000).encode(),
    "escaped strings": b'["' + b"\\u00e9" * 100_000 + b'"]',
    "a metrics line": EpochRecord(
        1, val_accuracy=0.5, grad_norms=tuple((f"l{i}", 0.1) for i in range(500))
    )
    .to_line()
    .encode(),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_bound_of_a_parse_is_never_below_what_it_allocates(name: str) -> None:
    data = HOSTILE[name]
    used, _ = allocated(lambda: json.loads(data))
    assert json_bound(data) >= used, f"{name}: bound {json_bound(data)} < {used} allocated"


def write_run(root: Path, run_id: str, epochs: int, layers: int = 20) -> RunDir:
    run = RunDir.create(root, "exp", run_id)
    run.write_config(ConfigRecord("exp", run_id, "now", {"seed": 0, "model": {"depth": 3}}))
    lines = "".join(
        EpochRecord(
            e,
            train_loss=0.5,
            val_loss=0.4,
            val_accuracy=0.9,
            lr=0.01,
            grad_norms=tuple((f"features.{i}.conv", 0.1 * i + e) for i in range(layers)),
        ).to_line()
        for e in range(1, epochs + 1)
    )
    (run.path / "metrics.jsonl").write_text(lines)
    return run


def test_a_parsed_run_is_counted_at_about_what_it_keeps(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 2000)
    store = RunStore(tmp_path, memory_bytes=256 * MiB)
    used, run = allocated(lambda: store.run("exp", "r"))
    counted = store.budget.used
    print(f"\ncounted {counted / MiB:.2f} MiB, allocated {used / MiB:.2f} MiB")
    assert 0.8 * used <= counted <= 1.3 * used
    del run
    store.evict_oldest()
    assert store.budget.used == 0  # given back once nothing holds the run


def test_a_run_over_the_budget_is_refused_and_listed_apart(tmp_path: Path) -> None:
    write_run(tmp_path, "small", 10)
    write_run(tmp_path, "large", 4000)  # about 12 MiB parsed
    store = RunStore(tmp_path, memory_bytes=4 * MiB)
    with pytest.raises(RunTooLarge) as info:
        store.run("exp", "large")
    message = str(info.value)
    assert "run 'large' of 'exp'" in message and "4.0 MiB" in message, message
    assert "--run-memory-mb" in message
    assert store.budget.used < MiB  # the parse stopped and gave back what it held
    scan = store.scan("exp")
    assert [r.run_id for r in scan.runs] == ["small"]
    [skipped] = scan.malformed
    assert skipped.run_id == "large" and skipped.reason.startswith("not read: parsing it takes")
    assert isinstance(info.value, MalformedRun)  # a server answers FAILED_PRECONDITION


def test_the_cache_keeps_runs_by_bytes_and_the_budget_holds_across_calls(
    tmp_path: Path,
) -> None:
    for i in range(8):
        write_run(tmp_path, f"r{i}", 300)  # about 0.7 MiB parsed each
    store = RunStore(tmp_path, memory_bytes=4 * MiB)
    for _ in range(2):
        for i in range(8):
            store.run("exp", f"r{i}")
            assert store.budget.used <= 4 * MiB
    assert store.cached_bytes <= 4 * MiB
    assert 2 <= len(store._cache) < 8
    held = [store.run("exp", f"r{i}") for i in range(3)]  # a call holding three runs
    with pytest.raises(ReaderBusy) as info:
        held += [store.run("exp", f"r{i}") for i in range(3, 8)]
    assert "--run-memory-mb" in str(info.value) and "try again" in str(info.value)
    del held, info
    gc.collect()
    store.run("exp", "r7")  # the memory came back when the call let go


def test_a_malformed_run_is_remembered_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_run(tmp_path, "bad", 3)
    (run.path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": "two"}\n{"epoch": 3}\n')
    store = RunStore(tmp_path)
    reads: list[str] = []
    read_bytes = LocalFiles.read_bytes

    def counting(self: LocalFiles, rel: str, *args: Any) -> bytes | None:
        reads.append(rel)
        return read_bytes(self, rel, *args)

    monkeypatch.setattr(LocalFiles, "read_bytes", counting)
    for _ in range(3):
        with pytest.raises(MalformedRun, match="epoch is 'two'"):
            store.run("exp", "bad")
    assert reads.count("metrics.jsonl") == 1
    run.append_metrics(EpochRecord(4))  # changed: read again
    with pytest.raises(MalformedRun):
        store.run("exp", "bad")
    assert reads.count("metrics.jsonl") == 2


def test_a_line_longer_than_the_limit_is_malformed_before_it_is_parsed() -> None:
    line = b'{"epoch": 1, "pad": "' + b"x" * MAX_LINE_BYTES + b'"}\n'
    charged: list[int] = []
    with pytest.raises(MalformedRun, match="longer than the 1,048,576 bytes"):
        parse_metrics(line, account=charged.append)
    assert sum(c for c in charged if c > 0) < MiB
    with pytest.raises(MalformedRun, match="line 1 is"):  # also as a torn last line
        parse_metrics(line.rstrip(b"\n"))


def test_a_budget_reserves_only_what_fits() -> None:
    budget = MemoryBudget(100)
    assert budget.try_reserve(60) and not budget.try_reserve(50)
    owner = type("Owner", (), {})()
    budget.hold_for(owner, 60)
    del owner
    assert budget.used == 0 and budget.try_reserve(100)
    with pytest.raises(ValueError, match="positive"):
        MemoryBudget(0)


def test_a_config_of_empty_objects_is_counted_before_it_is_parsed(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "r")
    empties = "[" + ",".join(["{}"] * 200_000) + "]"  # 600 kB on disk, about 15 MB parsed
    (run.path / "config.json").write_text('{"config": {"x": ' + empties + "}}")
    store = RunStore(tmp_path, memory_bytes=256 * MiB)
    used, _run = allocated(lambda: store.run("exp", "r"))
    assert 0.95 * used <= store.budget.used <= 1.3 * used  # the cache's own entry aside
    refused = RunStore(tmp_path, memory_bytes=4 * MiB)
    peak: list[int] = []

    def parse() -> None:
        with pytest.raises(RunTooLarge):
            refused.run("exp", "r")
        peak.append(tracemalloc.get_traced_memory()[1])

    allocated(parse)
    assert peak[0] < 4 * MiB  # refused from its bound, before json.loads built it


def test_listing_statuses_parses_only_what_changed_when_runs_outgrow_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        write_run(tmp_path, f"r{i}", 300)  # about 0.7 MiB parsed each: 2 fit in 2 MiB
    bad = write_run(tmp_path, "bad", 1)
    (bad.path / "metrics.jsonl").write_text('{"epoch": "one"}\n')
    store = RunStore(tmp_path, memory_bytes=2 * MiB)
    parses: list[str] = []

    def counting(data: bytes, **kwargs: Any) -> Any:
        parses.append("metrics")
        return parse_metrics(data, **kwargs)

    monkeypatch.setattr("runstore.reader.parse_metrics", counting)
    with store.shares.client("ipv4:10.0.0.1"):  # 4 MiB of runs, one at a time: its 1 MiB
        first = dict(store.each_status("exp"))
        assert len(parses) == 7
        assert sum(isinstance(r, Run) for r in store.each_run("exp")) == 6
    assert first == {**{f"r{i}": "running" for i in range(6)}, "bad": None}
    parses.clear()
    assert dict(store.each_status("exp")) == first
    assert len(parses) == 0  # nothing changed: nothing parsed, though few runs stay cached
    assert len(store._cache) < 6
    write_run(tmp_path, "r5", 301)
    assert dict(store.each_status("exp")) == first
    assert len(parses) == 1  # only the run that changed


def test_one_client_holds_at_most_half_of_the_budget(tmp_path: Path) -> None:
    for i in range(6):
        write_run(tmp_path, f"r{i}", 300)  # about 0.7 MiB parsed each
    store = RunStore(tmp_path, memory_bytes=8 * MiB)
    with store.shares.client("ipv4:10.0.0.1"):
        held = [store.run("exp", f"r{i}") for i in range(5)]  # 3.3 MiB of its 4 MiB
        with pytest.raises(ReaderBusy, match="this client's calls in flight hold"):
            held.append(store.run("exp", "r5"))
        with store.shares.client("ipv4:10.0.0.2"):  # another client still reads
            assert store.run("exp", "r5").run_id == "r5"
    assert store.shares.used("ipv4:10.0.0.1") == 0  # its calls ended
    del held
    with store.shares.client("ipv4:10.0.0.1"):
        listed = [r.run_id for r in store.scan("exp").runs]  # one run at a time is fine
    assert listed == [f"r{i}" for i in range(6)]


def test_a_run_over_a_clients_share_is_not_read_for_any_client(tmp_path: Path) -> None:
    write_run(tmp_path, "large", 2000)  # about 6 MiB parsed: under 8 MiB, over its half
    store = RunStore(tmp_path, memory_bytes=8 * MiB)
    with store.shares.client("ipv4:10.0.0.1"), pytest.raises(RunTooLarge) as info:
        store.run("exp", "large")
    assert "the most one client's calls may hold (half of --run-memory-mb)" in str(info.value)
