"""Encoded images (PNG, JPEG) to the normalised float tensor a model expects.

The recipe comes from the model's ONNX metadata `stride.preprocess` (see
docs/formats.md): decode, convert to C channels (L or RGB), resize to H x W
(bilinear), divide by `scale`, then `(x - mean) / std` per channel. The server
hard-codes none of it, so a client sends the image file and nothing else.

Decoding is the costly part: a small file can claim an image of many megapixels,
which takes far longer and far more memory to decode than a model's input needs
(docs/notes/request-costs.md has a measured case). So an image may be at
most `max_scale` times the model's input in each direction (in pixels all told,
read from the header before any decoding), and `DecodeSlots` bounds how many
images decode at once across the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidInput, ResourceExhausted

# A decompression bomb guard whatever the scale: 64 megapixels is far above any
# classifier's input.
MAX_PIXELS = 64_000_000
# How long a request without a deadline waits for a decode slot before it is refused.
DECODE_WAIT_S = 10.0


class DecodeSlots:
    """At most `count` images decode at once (0: one per core); the rest wait their turn.

    Decoding is CPU-bound, so more decodes than cores finish no sooner, and each holds
    its decoded pixels meanwhile: the slots bound the memory all decodes take together.
    """

    def __init__(self, count: int = 0) -> None:
        self.count = count or os.cpu_count() or 1
        self._slots = threading.BoundedSemaphore(self.count)

    @contextlib.contextmanager
    def slot(self, deadline: float | None = None) -> Iterator[None]:
        """Hold a slot; ResourceExhausted if none frees up by `deadline` (perf_counter s)."""
        wait = DECODE_WAIT_S if deadline is None else max(0.0, deadline - time.perf_counter())
        if not self._slots.acquire(timeout=wait):
            raise ResourceExhausted(
                f"{self.count} images are being decoded already (--max-decodes) and none "
                f"finished within {wait:.1f} s; try again later"
            )
        try:
            yield
        finally:
            self._slots.release()


@dataclass(frozen=True)
class Preprocess:
    """Size, channels and normalisation of a model's input."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0

    @classmethod
    def from_metadata(cls, text: str) -> Preprocess:
        """Parse the `stride.preprocess` JSON (ValueError names the bad field)."""
        try:
            spec = json.loads(text)
            pre = cls(
                channels=int(spec["channels"]),
                height=int(spec["height"]),
                width=int(spec["width"]),
                mean=tuple(float(m) for m in spec["mean"]),
                std=tuple(float(s) for s in spec["std"]),
                scale=float(spec.get("scale", 255.0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                "metadata stride.preprocess must be JSON with channels, height, width, mean, std "
                f"(and optional scale): {exc}"
            ) from exc
        if pre.channels not in (1, 3):
            raise ValueError(f"stride.preprocess channels must be 1 or 3, got {pre.channels}")
        if len(pre.mean) != pre.channels or len(pre.std) != pre.channels:
            raise ValueError("stride.preprocess mean and std need one value per channel")
        if any(s <= 0 for s in pre.std) or pre.scale <= 0 or min(pre.height, pre.width) < 1:
            raise ValueError("stride.preprocess std, scale, height and width must be positive")
        return pre

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def max_pixels(self, max_scale: float) -> int:
        """Most pixels an image may have: `max_scale` times the input's height and width."""
        scaled = int(max_scale * self.height) * int(max_scale * self.width)
        return max(1, min(MAX_PIXELS, scaled))

    def image_to_array(
        self, data: bytes, index: int = 0, *, max_scale: float | None = None
    ) -> np.ndarray:
        """Decode one encoded image into a float32 array of shape (C, H, W)."""
        from PIL import Image, UnidentifiedImageError

        limit = MAX_PIXELS if max_scale is None else self.max_pixels(max_scale)
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                if image.width * image.height > limit:
                    why = f"at most {limit} pixels"
                    if max_scale is not None:
                        why += (
                            f" ({max_scale:g} times the model's {self.width}x{self.height} "
                            "input each way; --max-image-scale)"
                        )
                    raise InvalidInput(
                        f"image {index} is {image.width}x{image.height} pixels; images may "
                        f"have {why}: resize it before sending"
                    )
                if image.format not in ("PNG", "JPEG"):
                    raise InvalidInput(
                        f"image {index} is {image.format}; expected PNG or JPEG bytes"
                    )
                converted = image.convert("L" if self.channels == 1 else "RGB")
                resized = converted.resize((self.width, self.height), Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.float32)
        except Image.DecompressionBombError as exc:
            # PIL refuses headers over 2 x Image.MAX_IMAGE_PIXELS before our own limit applies.
            raise InvalidInput(
                f"image {index} claims more than {MAX_PIXELS} pixels; at most that many are "
                "accepted"
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(
                f"image {index} ({len(data)} bytes) cannot be decoded: expected PNG or JPEG bytes"
            ) from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]  # (H, W) -> (H, W, 1)
        chw = pixels.transpose(2, 0, 1) / self.scale  # (C, H, W) in [0, 1]
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((chw - mean) / std).astype(np.float32, copy=False)

    def images_to_batch(
        self,
        images: list[bytes],
        *,
        max_scale: float | None = None,
        slots: DecodeSlots | None = None,
        deadline: float | None = None,
    ) -> np.ndarray:
        """Decode a list of encoded images into a float32 batch (N, C, H, W).

        Each image takes a decode slot of `slots` for its own decoding only.
        """
        arrays = []
        for i, data in enumerate(images):
            with slots.slot(deadline) if slots is not None else contextlib.nullcontext():
                arrays.append(self.image_to_array(data, i, max_scale=max_scale))
        return np.stack(arrays)
