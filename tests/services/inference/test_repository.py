"""The model repository: version policy, polling hot reload, bad models, path safety."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidInput, ModelNotFound, NotReady
from services.inference.repository import ModelRepository
from services.inference.runtime import RuntimeOptions
from services.inference.tensors import InferRequest, InferResult, InputTensor
from tests.services.inference.onnx_models import add_model, classifier, expected

X = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)


def request(model: str = "digits", version: str = "") -> InferRequest:
    return InferRequest(model, version, [InputTensor("input", "FP32", X.shape, X)])


def logits(result: InferResult) -> np.ndarray:
    data = result.outputs[0].data
    assert isinstance(data, np.ndarray)
    return data


def which_seed(out: np.ndarray, seeds: range = range(1, 6)) -> int:
    return next(s for s in seeds if np.allclose(out, expected(X, seed=s)[0], atol=1e-4))


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[ModelRepository]:
    repo = ModelRepository(tmp_path)
    yield repo
    repo.close()


def test_latest_policy_serves_the_highest_versions(
    tmp_path: Path, repository: ModelRepository
) -> None:
    add_model(tmp_path, "digits", versions=(1, 2, 3), policy="latest { num_versions: 2 }")
    repository.poll()
    assert [(e.version, e.state) for e in repository.index()] == [("2", "READY"), ("3", "READY")]
    assert which_seed(logits(repository.infer(request()))) == 3
    assert which_seed(logits(repository.infer(request(version="2")))) == 2
    with pytest.raises(ModelNotFound, match="has no version 1"):
        repository.get("digits", "1")


@pytest.mark.parametrize(
    ("policy", "served"),
    [("all { }", ["1", "2", "3"]), ("specific { versions: [ 1, 3 ] }", ["1", "3"])],
)
def test_all_and_specific_policies(
    tmp_path: Path, repository: ModelRepository, policy: str, served: list[str]
) -> None:
    add_model(tmp_path, "digits", versions=(1, 2, 3), policy=policy)
    repository.poll()
    assert [e.version for e in repository.index()] == served


def test_a_corrupt_model_fails_only_its_own_load(
    tmp_path: Path, repository: ModelRepository
) -> None:
    add_model(tmp_path, "digits")
    bad = add_model(tmp_path, "broken", versions=())
    (bad / "1").mkdir()
    (bad / "1" / "model.onnx").write_bytes(b"\x08\x07garbage")
    wrong = add_model(tmp_path, "wrongdims", versions=(), shape=(1, 8, 8))
    classifier(wrong / "1" / "model.onnx", shape=(3, 4, 4))
    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "config.pbtxt").write_text("max_batch_size: [oops")
    repository.poll()
    states = {e.name: (e.state, e.reason) for e in repository.index()}
    assert states["digits"][0] == "READY"
    assert "cannot load the model" in states["broken"][1]
    assert "dims" in states["wrongdims"][1]
    assert "not a valid ModelConfig" in states["badconfig"][1]
    with pytest.raises(NotReady, match="cannot load the model"):
        repository.infer(request("broken"))
    with pytest.raises(FailedPrecondition, match="failed to load model 'broken'"):
        repository.load("broken")
    assert not repository.all_ready()
    assert repository.infer(request()).outputs


@pytest.mark.parametrize("name", ["..", "../digits", "a/b", "/etc/passwd", ".hidden", ""])
def test_names_cannot_leave_the_repository(repository: ModelRepository, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        repository.get(name)
    with pytest.raises(InvalidInput):
        repository.load(name)


def test_label_filename_must_be_a_plain_name(tmp_path: Path, repository: ModelRepository) -> None:
    folder = add_model(tmp_path, "digits")
    text = (folder / "config.pbtxt").read_text().replace('"labels.txt"', '"../../etc/passwd"')
    (folder / "config.pbtxt").write_text(text)
    repository.poll()
    assert "plain file name" in repository.index()[0].reason


def test_polling_adds_and_removes_versions_and_models(
    tmp_path: Path, repository: ModelRepository
) -> None:
    add_model(tmp_path, "digits", versions=(1,))
    repository.poll()
    staging = tmp_path / "digits" / ".tmp-2"
    classifier(staging / "model.onnx", seed=2)
    repository.poll()
    assert [e.version for e in repository.index()] == ["1"]  # half-written folders are ignored
    staging.rename(tmp_path / "digits" / "2")
    repository.poll()
    assert [e.version for e in repository.index()] == ["2"]
    assert which_seed(logits(repository.infer(request()))) == 2
    shutil.rmtree(tmp_path / "digits" / "2")
    repository.poll()
    assert [e.version for e in repository.index()] == ["1"]
    shutil.rmtree(tmp_path / "digits")
    repository.poll()
    assert repository.index() == []
    with pytest.raises(ModelNotFound):
        repository.get("digits")


def test_explicit_unload_survives_polling(tmp_path: Path, repository: ModelRepository) -> None:
    add_model(tmp_path, "digits")
    repository.poll()
    repository.unload("digits")
    repository.poll()
    assert not repository.is_ready("digits")
    repository.load("digits")
    assert repository.is_ready("digits")


def test_hot_reload_under_continuous_requests_has_zero_failures(tmp_path: Path) -> None:
    add_model(tmp_path, "digits", versions=(1,))
    repository = ModelRepository(tmp_path)
    repository.poll()
    repository.start_polling(0.05)
    failures: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                seen.add(which_seed(logits(repository.infer(request()))))
            except BaseException as exc:  # any failure fails the test
                failures.append(exc)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        for version in (2, 3, 4):
            staging = tmp_path / "digits" / f".tmp-{version}"
            classifier(staging / "model.onnx", seed=version)
            staging.rename(tmp_path / "digits" / str(version))
            deadline = time.monotonic() + 10
            while version not in seen and time.monotonic() < deadline:
                time.sleep(0.02)
            shutil.rmtree(tmp_path / "digits" / str(version - 1))
        time.sleep(0.3)
    finally:
        stop.set()
        for c in clients:
            c.join(10)
        repository.close()
    assert failures == []
    assert {1, 2, 3, 4} <= seen


def test_hot_reload_through_the_port_under_continuous_requests(tmp_path: Path) -> None:
    import grpc

    from services.common import ServerOptions
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.server import InferenceServer
    from tests.services.inference.conftest import infer_request, output_array

    add_model(tmp_path, "digits", versions=(1,))
    server = InferenceServer(
        tmp_path, ServerOptions(host="127.0.0.1", port=0), metrics=None, poll_interval=0.05
    ).start()
    failures: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def client() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            while not stop.is_set():
                try:
                    out = output_array(stub.ModelInfer(infer_request(X), timeout=30), "logits")
                    seen.add(which_seed(out))
                except BaseException as exc:  # any failure fails the test
                    failures.append(exc)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    try:
        for version in (2, 3):
            staging = tmp_path / "digits" / f".tmp-{version}"
            classifier(staging / "model.onnx", seed=version)
            staging.rename(tmp_path / "digits" / str(version))
            deadline = time.monotonic() + 10
            while version not in seen and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(0.2)
    finally:
        stop.set()
        for c in clients:
            c.join(30)
        server.stop(0)
    assert failures == []
    assert {1, 2, 3} <= seen


@pytest.mark.parametrize(
    ("spin", "allow", "stop"), [("off", "0", None), ("run", "1", "1"), ("on", "1", None)]
)
def test_intra_op_spinning_follows_the_runtime_options(
    tmp_path: Path, spin: str, allow: str, stop: str | None
) -> None:
    add_model(tmp_path, "digits")
    repository = ModelRepository(tmp_path, RuntimeOptions(spin=spin))
    try:
        repository.poll()
        options = repository.get("digits").sessions[0].get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
        if stop is None:
            with pytest.raises(RuntimeError, match="does not have configuration"):
                options.get_session_config_entry("session.force_spinning_stop")
        else:
            assert options.get_session_config_entry("session.force_spinning_stop") == stop
    finally:
        repository.close()


@pytest.mark.parametrize(
    ("count", "threads", "expected"), [(1, 0, 0), (2, 0, 4), (3, 0, 2), (16, 0, 1), (2, 3, 3)]
)
def test_cpu_instances_divide_the_cores_unless_threads_are_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, threads: int, expected: int
) -> None:
    """8 cores: one instance keeps ONNX Runtime's default (0, one per core); N instances
    get 8 // N threads each (at least 1); an explicit --threads is kept as given."""
    from services.inference import runtime

    monkeypatch.setattr(runtime, "available_cores", lambda: 8)
    folder = add_model(tmp_path, "digits")
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", f"count: {count}"))
    repository = ModelRepository(tmp_path, RuntimeOptions(intra_op_threads=threads))
    try:
        repository.poll()
        sessions = repository.get("digits").sessions
        assert len(sessions) == count
        assert {s.get_session_options().intra_op_num_threads for s in sessions} == {expected}
    finally:
        repository.close()


@pytest.mark.parametrize(
    ("count", "cores", "expected"), [(1, 4, 4), (2, 4, 2), (3, 4, 1), (1, 1, 1)]
)
def test_a_worker_divides_only_its_share_of_the_cores(
    tmp_path: Path, count: int, cores: int, expected: int
) -> None:
    """A process of `stride serve --workers N` gets `cores` (its share): a model's instances
    divide those, and one instance takes them all, not ONNX Runtime's one per core."""
    folder = add_model(tmp_path, "digits")
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", f"count: {count}"))
    repository = ModelRepository(tmp_path, RuntimeOptions(cores=cores))
    try:
        repository.poll()
        sessions = repository.get("digits").sessions
        assert {s.get_session_options().intra_op_num_threads for s in sessions} == {expected}
    finally:
        repository.close()


def test_changes_are_loaded_first_and_routed_when_swap_together_returns(
    tmp_path: Path, repository: ModelRepository
) -> None:
    """The hook a server of several processes waits in: every new version is loaded and
    warmed up, none routed; after it returns, all are (and the replaced ones are gone)."""
    add_model(tmp_path, "digits", versions=(1,))
    add_model(tmp_path, "other", versions=(1,))
    repository.poll()
    seen: list[tuple[int, int, list[tuple[str, str, str]]]] = []

    def routed(name: str) -> int:
        return repository.get(name).version if repository.is_ready(name) else 0

    def swap_together(stop: threading.Event) -> None:
        states = [(e.name, e.version, e.state) for e in repository.index()]
        seen.append((routed("digits"), routed("other"), states))

    repository.swap_together = swap_together
    for name in ("digits", "other"):
        classifier(tmp_path / name / "2" / "model.onnx", seed=2)
    repository.poll()
    assert len(seen) == 1
    digits, other, states = seen[0]
    assert (digits, other) == (1, 1)  # still routed to version 1 in the hook
    assert ("digits", "2", "LOADING") in states and ("other", "2", "LOADING") in states
    assert (repository.get("digits").version, repository.get("other").version) == (2, 2)
    assert [(e.name, e.version) for e in repository.index()] == [("digits", "2"), ("other", "2")]
    repository.poll()  # nothing changed: nothing to swap, no wait
    assert len(seen) == 1
    repository.unload("other")
    assert len(seen) == 2 and seen[1][1] == 2  # an unload waits too, then takes effect
    assert not repository.is_ready("other")
    repository.load("other")
    assert len(seen) == 3 and seen[2][1] == 0  # loaded, not yet routed in the hook
    assert repository.is_ready("other")


def test_available_cores_counts_this_process_s_cpus() -> None:
    from services.inference.runtime import available_cores

    assert 1 <= available_cores() <= (os.cpu_count() or 1)


def test_an_unknown_spin_mode_is_refused_naming_the_modes() -> None:
    with pytest.raises(ValueError, match="off, run, on"):
        RuntimeOptions(spin="sometimes")


def test_the_cli_names_the_same_spin_modes_as_the_runtime() -> None:
    from services.inference.runtime import SPIN_MODES
    from stride.commands.serve import SPIN_MODES as CLI_SPIN_MODES

    assert CLI_SPIN_MODES == SPIN_MODES


def test_infer_async_answers_and_counts_as_infer(
    tmp_path: Path, repository: ModelRepository
) -> None:
    import asyncio

    add_model(tmp_path, "digits", versions=(1, 2))
    repository.poll()
    sync = repository.infer(request())
    result = asyncio.run(repository.infer_async(request()))
    assert np.allclose(logits(result), logits(sync)) and which_seed(logits(result)) == 2
    bad = InferRequest("digits", "", [InputTensor("input", "FP32", (2, 3), np.zeros((2, 3)))])
    with pytest.raises(InvalidInput, match="shape"):
        asyncio.run(repository.infer_async(bad))
    model = repository.get("digits")
    snap = model.stats.snapshot()
    assert (snap.success.count, snap.fail.count, snap.inference_count) == (2, 1, 4)
    assert model.batcher._arriving == 0  # the failed request's announcement was withdrawn
