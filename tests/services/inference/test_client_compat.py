"""The client-compatibility suite: other projects' clients against one `stride serve`.

One `stride serve` subprocess (gRPC and REST, the digits test model) serves every check,
once as one process and once as two (`--workers 2`).
Each client library runs in its own venv and subprocess, since their generated protos
clash with Stride's in one process: KServe 0.21's `InferenceRESTClient` and
`InferenceGRPCClient` (compat_kserve_client.py, .venv-kserve) and tritonclient's HTTP, gRPC
and asyncio gRPC clients (compat_triton_client.py, .venv-triton); gRPC's health client runs
here. Each script prints one JSON result per check; each check here compares its result
with compat_expectations.py and fails on any difference that docs/serving.md's table
"Client compatibility" does not list (the test reads that table, so the two cannot drift).
After the clients, the server gets SIGTERM, and its log must hold no error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.servers import free_port, stop, wait_ready
from tests.services.inference.compat_expectations import Context, all_checks, differences
from tests.services.inference.onnx_models import add_model

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).parent
DOC = ROOT / "docs" / "serving.md"
CHECKS = all_checks()
CLIENTS = tuple(dict.fromkeys(check.split("/")[0] for check in CHECKS))
TIMEOUT_S = 300  # for a client script, all told, on a machine at twice its cores' load


@dataclass(frozen=True)
class Script:
    """A client script, the venv whose Python runs it, and the clients it reports on."""

    venv: str
    path: Path
    clients: tuple[str, ...]
    make: str  # how a user gets the venv
    http_scheme: str  # what goes before HOST:PORT in the REST address it takes

    @property
    def python(self) -> Path:
        return ROOT / self.venv / "bin" / "python"


SCRIPTS = (
    Script(".venv-kserve", HERE / "compat_kserve_client.py", ("kserve-rest", "kserve-grpc"),
           "`make test` installs kserve==0.21.0 there", "http://"),
    Script(".venv-triton", HERE / "compat_triton_client.py",
           ("triton-http", "triton-grpc", "triton-grpc-aio"),
           "`make triton-client`; a .venv-triton made before it installed tritonclient[http]: "
           "remove .venv-triton/.stride-installed first", ""),
)  # fmt: skip

# Checks known to fail, each with the bug it shows (none now): they run as strict xfails,
# so that each turns into a failure the moment the server is fixed and its entry goes.
KNOWN_BUGS: dict[str, str] = {}


@dataclass
class Observed:
    """What one run of every client saw, and what the server logged."""

    results: dict[str, Any] = field(default_factory=dict)  # check id -> its result
    unavailable: dict[str, str] = field(default_factory=dict)  # client -> why it did not run
    stderr: dict[str, str] = field(default_factory=dict)  # venv -> its script's stderr
    log: str = ""
    exit_code: int | None = None
    context: Context = field(default_factory=lambda: Context(()))


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until GET /v2/health/live answers 200 (the gRPC port answering is not enough)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"stride serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _health(port: int) -> dict[str, Any]:
    """grpc.health.v1 Check for the server, the service, a model and an unknown name; List."""
    names = {"check_server": "", "check_service": "inference.GRPCInferenceService",
             "check_model": "digits", "check_unknown": "nope"}  # fmt: skip
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
        for check, service in names.items():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=60)
                out[check] = {"status": "OK", "value": status_name(reply.status)}
            except grpc.RpcError as exc:
                out[check] = {"status": exc.code().name}
        try:
            listed = stub.List(health_pb2.HealthListRequest(), timeout=60)
            value = {k: status_name(v.status) for k, v in listed.statuses.items()}
            out["list"] = {"status": "OK", "value": value}
        except grpc.RpcError as exc:
            out["list"] = {"status": exc.code().name, "message": exc.details()}
    return {f"grpc-health/{check}": result for check, result in out.items()}


def _collect(script: Script, proc: subprocess.Popen[str], seen: Observed) -> None:
    """The results a client script printed (what it managed to, should it hang)."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {TIMEOUT_S} s)"
    seen.stderr[script.venv] = err
    for line in out.splitlines():
        entry = json.loads(line)
        if "unavailable" in entry:
            seen.unavailable[entry["client"]] = f"{entry['unavailable']} ({script.make})"
        else:
            seen.results[entry["check"]] = entry["result"]


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def observed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Observed]:
    """Every client against one server: one process, then two on the same ports (stride
    serve --workers 2: load and unload reach both, statistics are their sum)."""
    root = tmp_path_factory.mktemp("compat")
    repo = root / "repository"
    add_model(repo, "digits")
    port, http_port = free_port(), free_port()
    seen = Observed(context=Context((str(repo), str(root), str(ROOT))))
    log = root / "server.log"
    command = [
        sys.executable, "-m", "stride.cli", "serve", "--repository", str(repo),
        "--host", "127.0.0.1", "--port", str(port), "--http-port", str(http_port),
        "--metrics-port", "-1", "--threads", "1", "--log-format", "text",
        "--model-control", "explicit",  # the load and unload checks need repository control
        "--workers", str(request.param),
    ]  # fmt: skip
    with log.open("wb") as err:
        server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    running: dict[Script, subprocess.Popen[str]] = {}
    try:
        wait_ready(port, server, timeout=120)
        _wait_http(http_port, server)
        for script in SCRIPTS:
            if not script.python.exists():
                why = f"no {script.venv} ({script.make})"
                seen.unavailable.update(dict.fromkeys(script.clients, why))
                continue
            running[script] = subprocess.Popen(
                [str(script.python), str(script.path), f"127.0.0.1:{port}",
                 f"{script.http_scheme}127.0.0.1:{http_port}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
            )  # fmt: skip
        seen.results.update(_health(port))
        for script, proc in running.items():
            _collect(script, proc, seen)
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
        seen.exit_code = stop(server, timeout=60)
        seen.log = log.read_text(errors="replace")
    yield seen


@dataclass(frozen=True)
class Documented:
    """A row of docs/serving.md's "Client compatibility" table: for `check`, Stride answers
    `stride` in `field` where Triton (or the protocol) answers `reference`."""

    check: str
    field: str
    stride: Any
    reference: Any


def documented_differences(text: str) -> dict[tuple[str, str], Documented]:
    """The accepted differences, parsed from the table under "## Client compatibility"."""
    section = text.split("\n## Client compatibility\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table: dict[tuple[str, str], Documented] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        stride, reference = (json.loads(c.strip("`")) for c in cells[2:4])
        for check in re.findall(r"`([^`]+)`", cells[0]):
            key = (check, cells[1].strip("`"))
            assert key not in table, f"{key} documented twice"
            table[key] = Documented(*key, stride, reference)
    assert table, "no differences table under '## Client compatibility' in docs/serving.md"
    return table


DOCUMENTED = documented_differences(DOC.read_text())


def _params() -> Iterator[Any]:
    for check in CHECKS:
        reason = KNOWN_BUGS.get(check)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(check, id=check, marks=marks)


@pytest.mark.parametrize("check", list(_params()))
def test_client_check(observed: Observed, check: str) -> None:
    """The client's answer is what it expects, or differs only as the table documents."""
    client = check.split("/")[0]
    if client in observed.unavailable:
        pytest.skip(f"{client} unavailable: {observed.unavailable[client]}")
    venv = next((s.venv for s in SCRIPTS if client in s.clients), "")
    stderr = observed.stderr.get(venv, "")[-3000:]
    assert check in observed.results, f"{client} reported no result for {check}; stderr: {stderr}"
    result, want = observed.results[check], CHECKS[check]
    unexplained = []
    for key in sorted(set(result) | set(want)):
        diffs = differences(result.get(key), want.get(key), observed.context, key)
        row = DOCUMENTED.get((check, key))
        if row is None:
            unexplained += diffs
        elif not diffs or result.get(key) != row.stride:
            unexplained.append(
                f"{key}: {result.get(key)!r}; docs/serving.md documents {row.stride!r} "
                f"(a documented difference that no longer holds: update the table)"
            )
    assert not unexplained, f"{check} answered {result}:\n" + "\n".join(unexplained)


def test_the_table_documents_real_differences() -> None:
    """Every row names a check and field of the suite, its reference column is what the
    check expects, and Stride's column differs from it."""
    for (check, key), row in DOCUMENTED.items():
        assert check in CHECKS, f"docs/serving.md names an unknown check {check!r}"
        assert key in CHECKS[check], f"{check} has no field {key!r}"
        assert CHECKS[check][key] == row.reference, (
            f"docs/serving.md says {check} expects {row.reference!r} in {key!r}; "
            f"the suite expects {CHECKS[check][key]!r}"
        )
        assert row.stride != row.reference, f"{check}: a difference that is none"


def test_clients_report_only_known_checks(observed: Observed) -> None:
    assert set(observed.results) <= set(CHECKS)


def test_no_answer_carries_a_server_path(observed: Observed) -> None:
    text = json.dumps(observed.results)
    leaked = [p for p in observed.context.server_paths if json.dumps(p)[1:-1] in text]
    assert leaked == [], [c for c, r in observed.results.items() if leaked[0] in json.dumps(r)]


def test_server_stops_cleanly(observed: Observed) -> None:
    assert observed.exit_code == 0, observed.log[-3000:]


def test_no_unretrieved_task_exception_logged(observed: Observed) -> None:
    assert "Task exception was never retrieved" not in observed.log, observed.log[-3000:]


def test_server_log_has_no_errors(observed: Observed) -> None:
    """No call of any client, well-formed or not, makes the server log an error."""
    errors = [
        line
        for line in observed.log.splitlines()
        if re.search(r"\b(ERROR|CRITICAL)\b", line) or line.startswith("Traceback")
    ]
    assert errors == [], observed.log[-3000:]
