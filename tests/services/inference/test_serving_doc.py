"""docs/serving.md's examples, run as a reader runs them against `stride serve`.

The `$` commands of the "HTTP/REST" section run in one bash session (so `X` and `H`
carry from one to the next) in a fresh folder, against `stride serve` over the test
suite's digits model, and each must print what the page shows below it (numbers to
within float32 rounding). The page's client examples ("Calling the server" and the
first block) run too: `stride predict`, Triton's Python client, and grpcurl where it is
installed. A change to an answer fails here until the page shows the new one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.services.inference.onnx_models import add_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "serving.md"
BIN = Path(sys.executable).parent  # stride and python3, as a reader's PATH has them
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Example:
    command: str
    output: str


def section(title: str) -> str:
    """The text of docs/serving.md's `## title` section."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def console_examples(text: str) -> list[Example]:
    """The `$` commands of the ```console blocks in `text`, each with the output shown
    under it; a command goes on over the indented lines that follow it."""
    out: list[Example] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        command: list[str] = []
        output: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command:
                    out.append(Example("\n".join(command), "\n".join(output)))
                command, output = [line[2:]], []
            elif line.startswith("    ") and command and not output:
                command.append(line)
            else:
                output.append(line)
        if command:
            out.append(Example("\n".join(command), "\n".join(output)))
    return out


def same(actual: str, shown: str) -> bool:
    """`actual` reads as `shown`: the same text, numbers within float32 rounding."""
    if NUMBER.split(actual) != NUMBER.split(shown):
        return False
    pairs = zip(NUMBER.findall(actual), NUMBER.findall(shown), strict=True)
    return all(math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-6) for a, b in pairs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    workdir: Path
    ports: dict[str, int]  # the page's port -> this server's

    def localize(self, text: str) -> str:
        for shown, port in self.ports.items():
            text = text.replace(f"localhost:{shown}", f"localhost:{port}")
        return text

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`stride serve` as the page starts it, in a folder with `repository/digits`."""
    if not (BIN / "stride").exists():
        pytest.skip(f"{BIN / 'stride'} is not installed (pip install -e .)")
    workdir = tmp_path_factory.mktemp("reader")
    add_model(workdir / "repository", "digits")
    ports = {"8001": _free_port(), "8000": _free_port()}
    args = ["serve", "--repository", "repository", "--host", "127.0.0.1", "--port",
            str(ports["8001"]), "--http-port", str(ports["8000"]), "--metrics-port", "-1",
            "--model-control", "explicit"]  # fmt: skip
    server = subprocess.Popen(
        [str(BIN / "stride"), *args], cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # until REST answers READY, or the server has exited
            assert server.poll() is None, server.communicate()[1][-3000:]
            try:
                url = f"http://127.0.0.1:{ports['8000']}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "stride serve not ready after 120 s"
            time.sleep(0.2)  # paces the polling; the wait is for the answer above
        yield Served(workdir, ports)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_the_page_has_the_examples_this_test_runs() -> None:
    examples = console_examples(section("HTTP/REST"))
    assert sum(e.command.startswith("curl") for e in examples) >= 10, examples
    assert any(e.command.startswith("stride predict") for e in examples)
    assert same("a 0.612412:1:one 1.5e-3", "a 0.6124121:1:one 0.0015")
    assert not same("0.61:1:one", "0.62:1:one") and not same("400", "404")


def test_every_rest_example_prints_what_the_page_shows(served: Served) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    examples = console_examples(section("HTTP/REST"))
    script = "".join(
        f"printf '\\n@@@ {i}\\n'\n{served.localize(e.command)}\n" for i, e in enumerate(examples)
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=served.workdir, env=served.env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = re.split(r"\n@@@ \d+\n", done.stdout)[1:]
    assert len(printed) == len(examples), done.stdout[-3000:]
    wrong = [
        f"$ {e.command}\nthe page shows:\n{e.output}\nit printed:\n{actual.rstrip(chr(10))}"
        for e, actual in zip(examples, printed, strict=True)
        if not same(actual.rstrip("\n"), e.output)
    ]
    assert not wrong, "\n\n".join(wrong) + "\n" + done.stderr[-2000:]


def test_the_client_examples_run(served: Served) -> None:
    """`stride predict` of the first block and of "Calling the server", and Triton's
    Python client; each must exit 0 and print an answer."""
    workdir = served.workdir
    Image.new("L", (8, 8), 90).save(workdir / "a.png")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(workdir / "b.jpg")
    if not (workdir / "seven.png").exists():  # the REST examples make it; alone, make it here
        Image.new("L", (8, 8), 200).save(workdir / "seven.png")
    blocks = re.findall(r"```bash\n(.*?)```", section("Calling the server"), re.S)
    lines = [line for line in DOC.read_text().split("```bash\n", 1)[1].split("```")[0].splitlines()
             if line.startswith("stride predict")]  # fmt: skip
    lines += [line for b in blocks if "grpcurl" not in b for line in b.splitlines()
              if line.startswith("stride predict")]  # fmt: skip
    assert len(lines) >= 3, lines
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", served.localize(line)], cwd=workdir, env=served.env(),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        assert done.stdout.startswith("model digits version 1\n"), done.stdout
    if not TRITON_PYTHON.exists():
        pytest.skip("tritonclient's venv is missing (make triton-client)")
    (code,) = re.findall(r"```python\n(.*?)```", section("Calling the server"), re.S)
    done = subprocess.run(
        [str(TRITON_PYTHON), "-c", served.localize(code)], cwd=workdir, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(re.findall(r"b'[0-9.]+:\d:\w+'", done.stdout)) == 12, done.stdout  # 4 x top 3


def test_the_grpcurl_examples_run(served: Served) -> None:
    if shutil.which("grpcurl") is None:
        pytest.skip("grpcurl is not installed")
    if not (served.workdir / "seven.png").exists():
        Image.new("L", (8, 8), 200).save(served.workdir / "seven.png")
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", section("Calling the server"), re.S)
                if "grpcurl" in b]  # fmt: skip
    done = subprocess.run(
        ["bash", "-ec", served.localize(block)], cwd=served.workdir, env=served.env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"status": "SERVING"' in done.stdout and "inference.GRPCInferenceService" in done.stdout
