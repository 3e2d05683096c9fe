"""The README's commands, run the way a user runs them: the `stride` executable in a
fresh working directory, with the default paths (no --runs, no absolute paths), each
command starting its own local Ray instance; then the model served, and called by
`stride predict`, curl and the README's Python client.

Every other test passes absolute temporary paths; these are the ones that caught
`make demo` writing its runs into Ray's session folder (a relative `runs` reached the
Ray Train workers, which start in their own working directory).

`test_every_readme_command_is_run_somewhere` reads README.md's shell blocks: a command
added there fails it until a test runs it and `COVERED` says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRIDE = Path(sys.executable).with_name("stride")  # .venv/bin/stride, as the README writes it
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"  # tritonclient (make triton-client)

# Every command of README.md's shell blocks (`.venv/bin/` dropped, continuations joined,
# comments cut), and the test that runs it. Short runs add `--set training.epochs=2`
# and ports of their own; everything else is run as written.
HERE = "tests/stride/test_readme_commands.py"
COVERED = {
    "make demo": "tests/stride/test_demo.py (stride demo, shortened); .ci/run (make demo)",
    "make test": ".ci/run",
    "stride train --config configs/digits.yaml": HERE,
    "stride sweep --config configs/digits.yaml --grid optimizer.name=sgd,adam --seeds 2 "
    "--experiment opt": HERE,
    "stride compare opt": HERE,
    "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...": "tests/pipeline/test_two_nodes.py",
    "S3='endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1'":
        "tests/pipeline/test_two_nodes.py (a local S3 server, moto)",
    'stride data pack digits --out "s3://stride/data/digits?$S3"':
        "tests/pipeline/test_two_nodes.py, tests/pipeline/test_data_object_store.py",
    'stride train --config configs/digits.yaml --set data.name=parquet --set '
    'data.root="s3://stride/data/digits?$S3" --runs "s3://stride/runs?$S3"':
        "tests/pipeline/test_two_nodes.py",
    "stride export runs/opt/<run-id> --repository repository": HERE,
    "stride serve --repository repository": HERE,
    'python -c "from sklearn.datasets import load_digits; from PIL import Image; '
    "Image.fromarray((load_digits().images[7] * 15).astype('uint8')).save('seven.png')\"": HERE,
    "stride predict --server localhost:8001 --model digits-cnn --top-k 3 seven.png": HERE,
    "stride predict --protocol http --server localhost:8000 --model digits-cnn seven.png": HERE,
    "curl -s localhost:8000/v2/models/digits-cnn": HERE,
    "kubectl apply -k deploy/k8s/overlays/cpu": "tests/deploy (the overlays rendered and "
    "validated offline; applying needs a cluster)",
    "make course": "tests/stride/test_course.py (stride course --quick)",
    "stride compare optimizers --runs runs/course --target 0.95":
        "tests/stride/test_course.py (the reduced course's comparisons)",
}  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder with a copy of configs/digits.yaml and nothing else."""
    if not STRIDE.exists():
        pytest.skip(f"{STRIDE} is not installed (pip install -e .)")
    path = tmp_path_factory.mktemp("user")
    (path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "digits.yaml", path / "configs" / "digits.yaml")
    return path


def stride(workdir: Path, *args: str, timeout: float = 600) -> str:
    """`stride ARGS` in `workdir` with the user's environment minus Stride's and Ray's
    variables (so every default applies), except the priority of Ray's workers that the
    suite sets (tests/conftest.py: at Ray's default, nice 15, a loaded machine starves
    them); returns stdout, fails with both streams."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIDE_", "RAY_")) and k != "PYTHONPATH"
    }
    niceness = "RAY_worker_niceness"  # Ray's own spelling
    if niceness in os.environ:
        env[niceness] = os.environ[niceness]
    proc = subprocess.run(
        [str(STRIDE), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"stride {' '.join(args)} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_train_writes_its_run_under_the_working_directory(workdir: Path) -> None:
    out = stride(workdir, "train", "--config", "configs/digits.yaml", "--set", "training.epochs=2")
    runs = sorted((workdir / "runs" / "default").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert f"run: {run}" in out
    assert summary(run)["status"] == "completed"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2]
    assert (run / "config.json").is_file() and (run / "checkpoints" / "model.pt").is_file()


def test_sweep_export_and_compare_with_relative_paths(workdir: Path) -> None:
    out = stride(
        workdir,
        "sweep",
        "--config",
        "configs/digits.yaml",
        "--grid",
        "optimizer.name=sgd,adam",
        "--seeds",
        "1",
        "--experiment",
        "opt",
        "--set",
        "training.epochs=2",
    )
    runs = sorted(
        p for p in (workdir / "runs" / "opt").iterdir() if p.is_dir() and p.name[0] != "."
    )
    assert [summary(r)["status"] for r in runs] == ["completed", "completed"], out
    assert "best run by val_accuracy" in out

    run_id = runs[0].name
    out = stride(workdir, "export", f"runs/opt/{run_id}", "--repository", "repository")
    assert "exported" in out
    assert sorted(p.name for p in (workdir / "repository").iterdir()) == ["digits-cnn"]
    assert (workdir / "repository" / "digits-cnn" / "1" / "model.onnx").is_file()

    out = stride(workdir, "compare", "opt")
    assert "sgd" in out and "adam" in out


def readme_commands() -> list[str]:
    """Every command of README.md's ```bash blocks: continuations joined, comments cut,
    whitespace collapsed, `.venv/bin/` dropped."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", "").splitlines():
            command = " ".join(re.sub(r"\s+#\s.*$", "", line).split())
            if command:
                out.append(command.removeprefix(".venv/bin/"))
    return out


def readme_python() -> str:
    """The README's Python client (its one ```python block)."""
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return str(code)


def test_every_readme_command_is_run_somewhere() -> None:
    shown = readme_commands()
    assert len(shown) == len(set(shown)), shown
    assert sorted(shown) == sorted(COVERED), (
        "README.md's commands and COVERED differ: run a new command in a test and say which "
        f"in COVERED.\nnot covered: {sorted(set(shown) - set(COVERED))}\n"
        f"no longer shown: {sorted(set(COVERED) - set(shown))}"
    )
    for where in COVERED.values():
        path = where.split(" ")[0].rstrip(",;")
        assert (ROOT / path).exists(), where


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shell(workdir: Path, command: str, ports: dict[str, int], timeout: float = 120) -> str:
    """A README command through bash in `workdir`, with the venv's executables and the
    test's ports; returns stdout, fails with both streams."""
    for default, port in ports.items():
        command = command.replace(f"localhost:{default}", f"localhost:{port}")
    if command.startswith(("stride ", "python ")):
        command = f"{STRIDE.parent}/{command}"
    proc = subprocess.run(
        ["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{command}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _shown(prefix: str) -> str:
    (command,) = [c for c in readme_commands() if c.startswith(prefix)]
    return command


def _wait_ready(server: subprocess.Popen[str], http_port: int) -> None:
    """Until the server answers READY over REST (fails if it exits, or after 2 minutes)."""
    ready = f"http://127.0.0.1:{http_port}/v2/health/ready"
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, server.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(ready, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "stride serve not ready after 120 s"
        time.sleep(0.2)  # paces the polling; the wait is for the answer above


def test_serve_the_export_and_call_it_as_the_readme_shows(workdir: Path) -> None:
    if not (workdir / "repository" / "digits-cnn").is_dir():  # this test run alone
        stride(workdir, "train", "--config", "configs/digits.yaml", "--set", "training.epochs=1")
        (run,) = (workdir / "runs" / "default").iterdir()
        stride(workdir, "export", f"runs/default/{run.name}", "--repository", "repository")
    ports = {"8001": _free_port(), "8000": _free_port(), "8002": _free_port()}
    _shell(workdir, _shown("python -c"), ports)
    assert (workdir / "seven.png").is_file()
    serve = _shown("stride serve").split()[1:]
    flags = ["--port", str(ports["8001"]), "--http-port", str(ports["8000"])]
    server = subprocess.Popen(
        [str(STRIDE), *serve, *flags, "--metrics-port", str(ports["8002"])],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(server, ports["8000"])
        out = _shell(workdir, _shown("stride predict --server"), ports).splitlines()
        assert out[:2] == ["model digits-cnn version 1", "seven.png"], out
        assert len(out) == 5 and all(len(line.split()) == 3 for line in out[2:]), out
        out = _shell(workdir, _shown("stride predict --protocol http"), ports).splitlines()
        assert out[:2] == ["model digits-cnn version 1", "seven.png"], out
        if shutil.which("curl"):
            metadata = json.loads(_shell(workdir, _shown("curl"), ports))
            assert metadata["name"] == "digits-cnn" and metadata["versions"] == ["1"]
        if TRITON_PYTHON.exists():  # tritonclient lives in its own venv
            code = readme_python().replace("localhost:8001", f"localhost:{ports['8001']}")
            done = subprocess.run(
                [str(TRITON_PYTHON), "-c", code],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert len(re.findall(r"b'[0-9.]+:[0-9]:[0-9]'", done.stdout)) == 3, done.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            status = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert status == 0, server.stderr.read()[-3000:] if server.stderr else status
