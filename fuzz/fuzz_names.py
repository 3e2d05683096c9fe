"""atheris: model names and versions (and run-store names) through every RPC that takes them.

The input is `name NUL version`, decoded as UTF-8 (protobuf strings must be valid
UTF-8; a client cannot send anything else). Besides the error mapping, every name a
check accepts must stay inside its folder.
"""

from __future__ import annotations

from collections.abc import Iterable

import atheris

with atheris.instrument_imports(include=["services", "fuzz"]):
    from fuzz import targets
    from fuzz.harness import main, split

TOKENS = [b"..", b"/", b"\\", b"digits", b"fz", b"good-s0-0000", b"%2e", b"\x00", b"1"]


def seeds() -> Iterable[bytes]:
    return [
        b"digits\x001",
        b"digits\x00",
        b"../digits\x001",
        b"fz\x00good-s0-0000",
        b"fz\x00..",
        b"a" * 128 + b"\x0099999999999999999",
        b"nobatch\x000",
        b"rgb\x00-1",
    ]


def test_one_input(data: bytes) -> None:
    name, version = (p.decode("utf-8", "replace") for p in split(data, 2))
    targets.check_names(name, version)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
