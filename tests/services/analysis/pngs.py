"""Check PNG bytes without trusting the writer: signature, IHDR size, and a full decode."""

from __future__ import annotations

import io
import struct


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; AssertionError when the bytes are not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR", "first chunk is not IHDR"
    width, height = struct.unpack(">II", data[16:24])
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every row: a truncated or corrupt file raises
        assert image.size == (width, height)
    return width, height
