"""The bench's tables in README.md and docs/performance.md, rendered from its JSON.

    python tools/docs_figures.py                  # make docs-figures: from results/bench-*.json
    python tools/docs_figures.py FILE.json ...    # from these runs only
    python tools/docs_figures.py --check          # exit 1 when a table was edited by hand

A table lives between two markers, `<!-- figures:NAME digest=... -->` and
`<!-- /figures:NAME -->`. NAME is a section of bench/run.py (`training`, `serving`, ...;
`gpu/NAME` for a run with `--gpu`), or `headline`: the few figures README.md shows,
each from its own section. Every table is drawn from the run that measured its section
last: a full `make bench` before a `--quick` one before a `--smoke` one, then the
newest; a failed section counts as not measured. A section that no run measured keeps
the table it had (or says that it was never measured), so a partial run (`--only`)
refreshes its own sections and leaves the others as they were.

Each table states where it came from: the command, the machine (CPU model, cores,
memory, GPUs), the load average at the start and the end, the date and the git
revision; README.md's names Stride's version instead of a revision. The digest in the
opening marker is that of the table as rendered, so a hand edit shows (`--check`, and
tests/tools/test_docs_figures.py). Rendering depends on the JSON alone (and, for a run
that did not record Stride's version, on pyproject.toml at its revision), so the same
runs give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rows import fmt  # noqa: E402

DOCS = ("README.md", "docs/performance.md")
MODES = {"full": 2, "quick": 1, "smoke": 0}
RUNS_BY_MODE = {
    "full": "`make bench`",
    "quick": "`make bench-quick`",
    "smoke": "`bench/run.py --smoke`",
}
NOT_MEASURED = "Not measured yet:"  # what a block says until a run measures its section
# A marker stands at the start of its line (a mention in the text, in backticks, does not)
MARKER = re.compile(
    r"^<!-- figures:(?P<name>[\w/]+)(?: digest=(?P<digest>[0-9a-f]+))? -->\n"
    r"(?P<body>.*?)"
    r"^<!-- /figures:(?P=name) -->",
    re.S | re.M,
)
REVISION = re.compile(r"\bgit [0-9a-f]{7,40}\b")
VERSION = re.compile(r"\bStride \d+\.\d+")


@dataclass(frozen=True)
class Headline:
    """A row of README.md's table: `figure` is the start of a bench row's figure."""

    label: str
    section: str
    figure: str


HEADLINE = (
    Headline("Ray Train, 1 worker: images/s (reference CNN)", "training",
             "Ray, 1 worker: images/s"),
    Headline("Ray Train, 2 workers: images/s", "training", "Ray, 2 workers: images/s"),
    Headline("5 optimizers x 2 seeds on the digits: wall s", "training",
             "5 optimizers x 2 seeds, digits: wall"),
    Headline("streamed from S3: images/s (reference CNN)", "data",
             "reference CNN streamed, S3"),
    Headline("`stride serve`, CNN, concurrency 16: infer/s", "serving",
             "cnn: stride serve infer/s, concurrency 16"),
    Headline("`stride serve`, CNN, concurrency 1: p50 us", "serving",
             "cnn: p50 latency at concurrency 1"),
    Headline("`stride serve`, digits, gRPC, concurrency 16: infer/s", "triton",
             "digits: stride serve --workers 1 infer/s, grpc, concurrency 16"),
    Headline("`stride serve`, CNN, gRPC, concurrency 16: infer/s", "triton",
             "cnn: stride serve --workers 1 infer/s, grpc, concurrency 16"),
    Headline("`stride serve`, CNN, concurrency 16: req/s", "peer",
             "cnn: stride serve req/s, concurrency 16"),
    Headline("`stride serve --workers 2`, digits, 64 connections: infer/s", "scaling",
             "digits: --workers 2 infer/s"),
    Headline("`stride serve` start to READY: s", "startup", "stride serve start to READY"),
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One bench JSON: where it is and what it holds."""

    path: Path
    doc: dict[str, Any]

    @property
    def rank(self) -> tuple[int, str, str]:
        return (MODES.get(self.doc.get("mode", ""), -1), self.doc.get("started_at", ""),
                self.path.name)  # fmt: skip

    def key(self, section: str) -> str:
        return f"gpu/{section}" if self.doc.get("gpu") else section

    def rows(self, section: str) -> list[dict[str, Any]]:
        """The section's rows, empty when it did not run or failed."""
        if "figures" not in self.doc.get("sections", {}).get(section, {}):
            return []
        return [r for r in self.doc.get("table", []) if r.get("section") == section]


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """The bench JSON files among `paths` that carry a table (others are skipped, named)."""
    runs = []
    for path in sorted(paths):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"docs-figures: skipped {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or not {"table", "sections", "machine"} <= doc.keys():
            print(f"docs-figures: skipped {path}: not a bench/run.py result", file=sys.stderr)
            continue
        runs.append(Run(path, doc))
    return runs


def latest(runs: list[Run]) -> dict[str, Run]:
    """For every section key, the run that measured it last (full before quick before smoke)."""
    best: dict[str, Run] = {}
    for run in runs:
        for section in run.doc["sections"]:
            key = run.key(section)
            if run.rows(section) and (key not in best or run.rank > best[key].rank):
                best[key] = run
    return best


def source(run: Run) -> str:
    """What a table came from: command, machine, load, date and revision, one line."""
    doc, m = run.doc, run.doc["machine"]
    load = f"load {m.get('load_average_start', ['?'])[0]} -> {m.get('load_average_end', ['?'])[0]}"
    gpus = f", {'; '.join(m['gpus'])}" if m.get("gpus") else ""
    git = doc.get("git", {})
    revision = (git.get("revision") or "unknown")[:7]
    changed = git.get("uncommitted_files")
    dirty = f" + {changed} uncommitted files" if changed else ""
    command = doc.get("command") or "run.py"
    if command.startswith("run.py"):  # bench/run.py names itself by its file name
        command = f"bench/{command}"
    return (
        f"`{command}` ({doc.get('mode')}), "
        f"{doc.get('started_at', '?')[:10]}, on {m.get('cpu')}, {m.get('cores')} cores, "
        f"{m.get('memory_gb')} GB{gpus}; {load}; git {revision}{dirty}"
    )


def stride_version(run: Run) -> str:
    """Stride's version when the run was measured: from its JSON, else from pyproject.toml
    at its revision (older runs did not record it)."""
    version = run.doc.get("versions", {}).get("stride")
    revision = run.doc.get("git", {}).get("revision")
    if not version and revision:
        try:
            shown = subprocess.run(
                ["git", "show", f"{revision}:pyproject.toml"], cwd=ROOT, capture_output=True,
                text=True, timeout=20, check=False,
            ).stdout  # fmt: skip
        except OSError:
            shown = ""
        found = re.search(r'^version = "([^"]+)"', shown, re.M)
        version = found[1] if found else None
    return f"Stride {version}" if version else "Stride (version not recorded)"


def headline_source(run: Run) -> str:
    """Where README.md's figures came from, without a revision: the run's mode, date,
    machine, load and Stride's version."""
    m = run.doc["machine"]
    gpus = f", {'; '.join(m['gpus'])}" if m.get("gpus") else ""
    start, end = m.get("load_average_start", ["?"])[0], m.get("load_average_end", ["?"])[0]
    return (
        f"{RUNS_BY_MODE.get(run.doc.get('mode', ''), 'bench/run.py')}"
        f"{' GPU=1' if run.doc.get('gpu') else ''}, {run.doc.get('started_at', '?')[:10]}, on "
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB{gpus}; load {start} "
        f"-> {end}; {stride_version(run)}"
    )


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


TEXT_COLUMNS = ("figure", "baseline", "baseline, same run", "note")


def _table(header: list[str], lines: list[list[str]]) -> str:
    align = ["---" if h in TEXT_COLUMNS else "---:" for h in header]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(_cell(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def render_section(run: Run, section: str) -> str:
    """A section's table with the line saying where it came from."""
    lines = [
        [r["figure"], fmt(r["value"]), r["baseline"], fmt(r["baseline_value"]), fmt(r["ratio"]),
         r["note"]]
        for r in run.rows(section)
    ]  # fmt: skip
    header = ["figure", "value", "baseline", "base", "ratio", "note"]
    return f"From {source(run)}.\n\n{_table(header, lines)}\n"


def render_headline(best: dict[str, Run]) -> str | None:
    """README.md's table: one row per HEADLINE entry, then where each run came from."""
    used: dict[Path, list[str]] = {}  # run -> the sections its rows came from
    lines = []
    for h in HEADLINE:
        run = best.get(h.section)
        rows = run.rows(h.section) if run else []
        row = next((r for r in rows if r["figure"].startswith(h.figure)), None)
        if row is None or run is None:
            lines.append([h.label, "not measured", "", "", ""])
            continue
        sections = used.setdefault(run.path, [])
        if h.section not in sections:
            sections.append(h.section)
        lines.append([h.label, fmt(row["value"]), row["baseline"], fmt(row["baseline_value"]),
                      fmt(row["ratio"])])  # fmt: skip
    if not used:
        return None
    table = _table(["figure", "value", "baseline, same run", "base", "ratio"], lines)
    runs = {run.path: run for run in best.values()}
    sources = [
        f"- {', '.join(sections)}: {headline_source(runs[path])}" for path, sections in used.items()
    ]
    return f"{table}\n\n" + "\n".join(sources) + "\n"


def not_measured(name: str) -> str:
    """The text of a block that no run has measured yet."""
    run = "`make bench GPU=1` on a CUDA machine" if name.startswith("gpu/") else "`make bench`"
    return f"{NOT_MEASURED} {run} writes this table.\n"


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def _block(name: str, body: str) -> str:
    return f"<!-- figures:{name} digest={digest(body)} -->\n{body}<!-- /figures:{name} -->"


def update(text: str, best: dict[str, Run]) -> tuple[str, list[str]]:
    """`text` with every block rendered anew where a run measured it; and what happened."""
    report: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, body = match["name"], match["body"]
        new: str | None
        if name == "headline":
            new = render_headline(best)
        elif name in best:
            new = render_section(best[name], name.removeprefix("gpu/"))
        else:
            new = None
        if new is None:
            report.append(f"{name}: kept (no run measured it)")
            # as it was, digest included: keeping a table must not bless a hand edit
            return match[0] if body.strip() else _block(name, not_measured(name))
        report.append(f"{name}: {'unchanged' if new == body else 'updated'}")
        return _block(name, new)

    return MARKER.sub(replace, text), report


def problems(text: str) -> list[str]:
    """What is wrong with the blocks of a document: edited by hand, unparsable, no revision."""
    out = []
    names = [m["name"] for m in MARKER.finditer(text)]
    opened = re.findall(r"^<!-- figures:([\w/]+)", text, re.M)
    if sorted(opened) != sorted(names):
        out.append(f"markers without their end: {sorted(set(opened) - set(names))}")
    for m in MARKER.finditer(text):
        name, body = m["name"], m["body"]
        if m["digest"] != digest(body):
            out.append(f"{name}: edited by hand (digest {m['digest']}, the body's {digest(body)})")
        if body.startswith(NOT_MEASURED):
            continue
        if name == "headline":  # README.md: the version, no commit hash
            if not VERSION.search(body) or REVISION.search(body):
                out.append(f"{name}: names no Stride version, or names a git revision")
        elif not REVISION.search(body):
            out.append(f"{name}: names no git revision")
        tables = parse_tables(body)
        if len(tables) != 1:
            out.append(f"{name}: {len(tables)} tables, expected one")
    return out


def parse_tables(body: str) -> list[list[list[str]]]:
    """The Markdown tables of `body` as rows of cells; raises ValueError on a ragged one."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in body.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if current is None:
            current = []
            tables.append(current)
        elif len(cells) != len(current[0]):
            raise ValueError(f"a row of {len(cells)} cells under {len(current[0])}: {line}")
        current.append(cells)
    for table in tables:
        if len(table) < 2 or not all(re.fullmatch(r":?-{3,}:?", c) for c in table[1]):
            raise ValueError(f"a table without its header line: {table[0]}")
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", type=Path, help="bench JSON (default: results/)")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--check", action="store_true", help="only check the blocks")
    parser.add_argument("--root", type=Path, default=ROOT, help="where README.md and docs/ are")
    args = parser.parse_args(argv)
    docs = [args.root / d for d in DOCS]
    if args.check:
        found = [f"{d.relative_to(args.root)}: {p}" for d in docs for p in problems(d.read_text())]
        print("\n".join(found) or "docs-figures: every table is as rendered")
        return 1 if found else 0
    files = args.files or sorted(args.results.glob("bench-*.json"))
    best = latest(load_runs(files))
    print(f"docs-figures: {len(files)} bench files; sections measured: {', '.join(sorted(best))}")
    seen: set[str] = set()
    for doc in docs:
        text = doc.read_text()
        new, report = update(text, best)
        seen |= {line.split(":")[0] for line in report}
        for line in report:
            print(f"  {doc.relative_to(args.root)} {line}")
        if new != text:
            doc.write_text(new)
    for name in sorted(set(best) - seen):
        print(
            f"  no table for {name}: add the lines <!-- figures:{name} --> and "
            f"<!-- /figures:{name} --> where it belongs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
