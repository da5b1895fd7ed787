"""Preview images from agents: decoded and re-encoded, never stored as sent.

A volunteer agent is untrusted, and the preview is served as ``image/png``
from our origin. So the bytes must really be a PNG, small enough to decode
(the size in its header is checked before any pixel is decoded: a 20000 x
20000 "decompression bomb" is a few kilobytes on the wire and 1.6 GB in
memory), and what we store is our own encoding of its pixels, without the
sender's chunks (text, profiles, anything appended).
"""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image

log = logging.getLogger(__name__)

MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE


class InvalidPreviewError(ValueError):
    """Not a PNG we are willing to decode."""


def _decode(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns (and past 2x raises) on big images; our own bound comes first.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG"])
        except Exception as exc:  # Pillow raises many types on hostile input
            raise InvalidPreviewError(f"not a PNG: {exc}") from exc
        width, height = image.size
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise InvalidPreviewError(f"{width}x{height} is over {MAX_SIDE}x{MAX_SIDE} pixels")
        try:
            image.load()
        except Exception as exc:
            raise InvalidPreviewError(f"PNG does not decode: {exc}") from exc
    return image


def reencode(data: bytes, job_id: str = "?") -> bytes | None:
    """A fresh PNG of the preview's pixels, or None (logged) if it is not an acceptable PNG."""
    try:
        image = _decode(data)
    except InvalidPreviewError as exc:
        log.warning("job %s: preview dropped: %s", job_id, exc)
        return None
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
    out = io.BytesIO()
    # No pnginfo, no icc_profile, no exif: only the pixels survive.
    image.convert(mode).save(out, format="PNG", optimize=False)
    return out.getvalue()
