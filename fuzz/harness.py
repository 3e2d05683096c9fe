"""What every atheris harness shares: seed corpus, dictionary, libFuzzer defaults, a split helper.

A harness module defines `test_one_input(data)`, `SEEDS` (a function returning
example inputs) and `TOKENS` (dictionary words), then calls `main(...)`.
Run one with `python -m fuzz.fuzz_image -max_total_time=60 CORPUS_DIR`; `fuzz/run.py`
runs them all. The first corpus folder, when empty, is filled with the seeds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

# libFuzzer options every run gets unless the command line sets them: an input that
# takes 10 s is a hang; 3 GB resident is a leak or a memory bomb.
DEFAULTS = ("-timeout=10", "-rss_limit_mb=3072", "-print_final_stats=1")


def split(data: bytes, parts: int, sep: bytes = b"\0") -> list[bytes]:
    """`data` cut at the first `parts - 1` separators, padded with b"" to `parts` pieces."""
    pieces = data.split(sep, parts - 1)
    return pieces + [b""] * (parts - len(pieces))


def _write_seeds(folder: Path, seeds: Iterable[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i:03d}").write_bytes(seed)


def _write_dict(path: Path, tokens: Iterable[bytes]) -> None:
    lines = []
    for token in tokens:
        escaped = "".join(
            chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in token
        )
        lines.append(f'"{escaped}"')
    path.write_text("\n".join(lines) + "\n")


def main(
    test_one_input: Callable[[bytes], None],
    seeds: Callable[[], Iterable[bytes]],
    tokens: Iterable[bytes] = (),
) -> None:
    """Set up libFuzzer with the seeds and dictionary, then fuzz until a limit or a crash."""
    import atheris

    argv = list(sys.argv)
    corpora = [Path(a) for a in argv[1:] if not a.startswith("-")]
    if corpora:
        _write_seeds(corpora[0], seeds())
        words = list(tokens)
        if words and not any(a.startswith("-dict=") for a in argv):
            dict_path = corpora[0].parent / f"{corpora[0].name}.dict"
            _write_dict(dict_path, words)
            argv.append(f"-dict={dict_path}")
    for option in DEFAULTS:
        if not any(a.startswith(option.split("=")[0] + "=") for a in argv):
            argv.append(option)
    # Warm up on the seeds before libFuzzer's clock starts: the first input of a harness
    # otherwise pays for its lazy imports (torch, for the run config), and on a busy
    # machine that alone can pass the per-input timeout, a hang that is not one.
    for seed in seeds():
        test_one_input(seed)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
