"""atheris: a YAML run config and `--set` overrides, as `stride train` reads and checks them.

The input is `yaml NUL override NUL override ...`. Anything but ConfigError escaping
`load_config` is a finding; a config that loads must round-trip through its dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pipeline.config", "pipeline.spec", "fuzz", "yaml"]):
    from fuzz import targets
    from fuzz.harness import main

ROOT = Path(__file__).resolve().parent.parent
TOKENS = [
    b"model:", b"blocks:", b"type: conv", b"type: pool", b"channels:", b"kernel:", b"stride:",
    b"padding:", b"head:", b"hidden:", b"optimizer.name=", b"data.image_size=", b"seed=",
    b"activation:", b"maxout", b"pieces:", b"synthetic", b"&a", b"*a", b"!!binary", b"null",
    b"model.blocks.0.channels=", b"2001-01-01", b".inf", b"[", b"{",
]  # fmt: skip


def seeds() -> Iterable[bytes]:
    digits = (ROOT / "configs" / "digits.yaml").read_bytes()
    synthetic = (
        b"data: {name: synthetic, image_size: [6, 6], channels: 1, num_classes: 3}\n"
        b"model:\n  blocks:\n    - {type: conv, channels: 4, padding: valid, stride: 2}\n"
        b"    - {type: pool, kind: mean, size: 2}\n  head: {hidden: [4], activation: maxout}\n"
    )
    return [
        digits,
        digits + b"\0optimizer.name=sgd\0model.activation=elu",
        synthetic,
        synthetic + b"\0model.blocks.0.kernel=5\0training.epochs=2",
        b"{}",
        b"seed: 1\0data.name=synthetic",
    ]


def test_one_input(data: bytes) -> None:
    text, *rest = data.split(b"\0")
    overrides = [r.decode("utf-8", "replace") for r in rest[:8]]
    targets.check_run_config(text, overrides)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
