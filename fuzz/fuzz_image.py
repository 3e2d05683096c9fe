"""atheris: encoded image bytes through the server's decoder (PIL, resize, normalise).

The first byte picks the model's input shape (1 or 3 channels, one of four sizes);
the rest is the file. Seeds are PNG and JPEG files of several modes and sizes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import atheris

with atheris.instrument_imports(include=["services", "fuzz", "PIL"]):
    from fuzz import targets
    from fuzz.harness import main

SHAPES = ((1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 5, 7))
TOKENS = [
    b"\x89PNG\r\n\x1a\n",
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"\xff\xd8\xff",
    b"\xff\xd9",
]


def seeds() -> Iterable[bytes]:
    """One byte of shape choice, then an image file."""
    from PIL import Image

    out = []
    for i, (mode, size, fmt) in enumerate(
        [
            ("L", (8, 8), "PNG"),
            ("RGB", (12, 9), "PNG"),
            ("RGBA", (3, 3), "PNG"),
            ("P", (6, 6), "PNG"),
            ("I;16", (4, 4), "PNG"),
            ("1", (9, 9), "PNG"),
            ("L", (16, 16), "JPEG"),
            ("RGB", (10, 10), "JPEG"),
            ("CMYK", (8, 8), "JPEG"),
        ]
    ):
        buf = io.BytesIO()
        Image.new(mode, size, 1 if mode == "1" else 7 * i).save(buf, format=fmt)
        out.append(bytes([i % len(SHAPES)]) + buf.getvalue())
    return out


def test_one_input(data: bytes) -> None:
    if not data:
        return
    channels, height, width = SHAPES[data[0] % len(SHAPES)]
    targets.check_image(data[1:], channels, height, width)


if __name__ == "__main__":
    main(test_one_input, seeds, TOKENS)
