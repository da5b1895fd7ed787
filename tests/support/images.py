"""Images for the image-to-3D tests: encoded with Pillow in memory, no files."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def picture(size: tuple[int, int] = (96, 64), *, noisy: bool = False) -> Image.Image:
    """A white object on a coloured ground; ``noisy`` fills it with incompressible pixels."""
    width, height = size
    if noisy:
        data = bytes(
            (x * 31 + y * 17 + (x * y) % 251) % 256 for y in range(height) for x in range(width * 3)
        )
        return Image.frombytes("RGB", size, data)
    image = Image.new("RGB", size, (40, 90, 200))
    image.paste((250, 250, 250), (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    return image


def encoded(
    fmt: str, size: tuple[int, int] = (96, 64), *, noisy: bool = False, **save: Any
) -> bytes:
    """``picture`` saved as PNG, JPEG or WEBP (``save``: Pillow's options, e.g. exif)."""
    buffer = io.BytesIO()
    picture(size, noisy=noisy).save(buffer, format=fmt, **save)
    return buffer.getvalue()
