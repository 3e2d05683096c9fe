"""A small Dockerfile reader for the image policy tests: stages and their instructions.

It handles what deploy/images uses: comments, parser directives, line continuations,
`FROM image[:tag|@digest] [AS name]`, exec-form (JSON) ENTRYPOINT and CMD, and the
arguments of the `pip install` commands in a RUN.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), the rest of the line, its first line number."""

    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    """A build stage: its base image, its name (if any) and its instructions after FROM."""

    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        """This stage's instructions with the given keyword."""
        return [i for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuations joined, comments dropped."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction is dropped
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        keyword, _, value = joined.partition(" ")
        found.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    if pending:
        raise ValueError("Dockerfile ends inside a continued line")
    return found


def stages(path: Path) -> list[Stage]:
    """The build stages of a Dockerfile, in order."""
    result: list[Stage] = []
    for inst in instructions(path.read_text()):
        if inst.keyword == "FROM":
            words = [w for w in inst.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], name, inst.line))
        elif result:
            result[-1].instructions.append(inst)
        elif inst.keyword != "ARG":
            raise ValueError(f"{path}:{inst.line}: {inst.keyword} before the first FROM")
    return result


def exec_form(inst: Instruction) -> list[str]:
    """The JSON array of an exec-form instruction (ValueError for the shell form)."""
    try:
        value = json.loads(inst.value)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"line {inst.line}: {inst.keyword} is not in exec form: {inst.value}")
    return value


def image_tag(image: str) -> str | None:
    """The tag (or `@digest`) of an image reference, None when it has neither."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def pip_extras(command: str) -> list[set[str]]:
    """The extras of every local-project `pip install ".[a,b]"` in a RUN command."""
    return [
        {extra.strip() for extra in match.split(",")}
        for match in re.findall(r"""["']?\.\[([A-Za-z0-9_,\s-]+)\]["']?""", command)
    ]


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of every `pip install` in a RUN command (shell words, quotes removed)."""
    found = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        for i, word in enumerate(words[:-1]):
            if Path(word).name in ("pip", "pip3") and words[i + 1] == "install":
                found.append(words[i + 2 :])
                break
    return found
