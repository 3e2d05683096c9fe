"""Encoded images (PNG, JPEG) to the normalised float tensor a model expects.

The recipe comes from the model's ONNX metadata `stride.preprocess` (see
docs/formats.md): decode, convert to C channels (L or RGB), resize to H x W
(bilinear), divide by `scale`, then `(x - mean) / std` per channel. The server
hard-codes none of it, so a client sends the image file and nothing else.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidInput

# A decompression bomb guard: 64 megapixels is far above any classifier's input.
MAX_PIXELS = 64_000_000


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

    def image_to_array(self, data: bytes, index: int = 0) -> np.ndarray:
        """Decode one encoded image into a float32 array of shape (C, H, W)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InvalidInput(
                        f"image {index} has {image.width}x{image.height} pixels; at most "
                        f"{MAX_PIXELS} are accepted"
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

    def images_to_batch(self, images: list[bytes]) -> np.ndarray:
        """Decode a list of encoded images into a float32 batch (N, C, H, W)."""
        return np.stack([self.image_to_array(data, i) for i, data in enumerate(images)])
