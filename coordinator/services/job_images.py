"""Input images of image-to-3D jobs: checked, decoded and re-encoded, then stored.

An uploaded image is untrusted bytes that we later serve from our origin and
hand to volunteers' agents. So it must be a PNG, JPEG or WebP of at most
``MAX_IMAGE_UPLOAD_BYTES`` whose first bytes say so, with nothing appended after
the image's own end (a "polyglot" hiding a ZIP, HTML or a second image); its
size in pixels is read from the header and checked before any pixel is decoded
(a decompression bomb is a few KB on the wire and gigabytes in memory); and
what we keep is our own PNG of its pixels: EXIF orientation applied, alpha
flattened onto white, at most ``IMAGE_SIDE`` pixels a side, without any of the
sender's metadata (EXIF, GPS, ICC profiles, text chunks). Decoding runs off the
event loop, a few at a time. Every refusal is an :class:`ImageError` with a
stable code and a message for people; nothing is stored for a refused file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps

from coordinator.i18n import gettext
from coordinator.store import models
from coordinator.store.storage import BlobStore
from protocol import limits

INPUT_KIND = "input.png"
"""The blob kind of a job's input image (``<job id>.input.png``)."""

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)
MAX_SUBMIT_BODY_BYTES = limits.MAX_IMAGE_UPLOAD_BYTES * 4 // 3 + 4 + 64 * 1024
"""A job submission's request body may carry an image: its bytes, base64-encoded in
JSON (4/3) or a multipart part, plus the other fields (the usual body limit)."""

SUBMIT_PATHS = ("/jobs", "/api/v1/jobs")
"""Where jobs are submitted (the generate form, the API): the bodies allowed that size."""

MAX_DECODING = 2
"""Uploads decoded at once (each may need ~64 MB of pixels at 4096 x 4096)."""

# A thread semaphore (held on the worker thread): the app may run several event loops
# (tests), and an asyncio one is bound to the first loop that waits on it.
_decoding = threading.BoundedSemaphore(MAX_DECODING)


class ImageError(ValueError):
    """An upload we refuse; ``code`` is the API's stable error code, the message is for
    people (in the request's language)."""

    def __init__(self, message: str, code: str = "image_invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class InputImage:
    """Our PNG of an uploaded image's pixels."""

    png: bytes
    width: int
    height: int
    sha256: str

    @classmethod
    def of(cls, png: bytes, width: int, height: int) -> InputImage:
        return cls(png, width, height, hashlib.sha256(png).hexdigest())

    @property
    def size(self) -> int:
        return len(self.png)


def _sniff(data: bytes) -> str:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise ImageError(gettext("The file is not a PNG, JPEG or WebP image."), "image_unsupported")


def _png_end(data: bytes) -> int:
    """Where a PNG's IEND chunk ends (chunks walked by their lengths)."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        pos += 12 + int(length)
        if kind == b"IEND":
            return pos
    raise ImageError(gettext("The image is truncated or damaged."))


def _jpeg_end(data: bytes) -> int:
    """Where a JPEG's EOI marker ends: segments walked by their lengths, entropy-coded
    data scanned for the next marker (0xFF not followed by 0x00 or a restart)."""
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError(gettext("The image is truncated or damaged."))
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + int(length)
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            pos = _next_marker(data, pos)
    raise ImageError(gettext("The image is truncated or damaged."))


def _next_marker(data: bytes, pos: int) -> int:
    """The first 0xFF at or after ``pos`` that starts a marker (not a stuffed 0xFF00 or a
    restart marker inside entropy-coded data); ``len(data)`` if there is none."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7:
            return pos
        pos += 2


def _end_of(data: bytes, kind: str) -> int:
    if kind == "PNG":
        return _png_end(data)
    if kind == "JPEG":
        return _jpeg_end(data)
    (riff_size,) = struct.unpack_from("<I", data, 4)
    return 8 + int(riff_size) + (int(riff_size) & 1)


def _check_ending(data: bytes, kind: str) -> None:
    end = _end_of(data, kind)
    if end > len(data):
        raise ImageError(gettext("The image is truncated or damaged."))
    if data[end:].strip(b"\x00"):
        raise ImageError(
            gettext(
                "The file has %(count)s bytes after the end of the image (another file "
                "hidden in it?). Save the image again and upload that."
            )
            % {"count": len(data) - end}
        )


def _too_many_pixels(width: int, height: int) -> ImageError:
    side = limits.MAX_IMAGE_SIDE
    return ImageError(
        gettext("The image is %(width)s×%(height)s pixels; the limit is %(max)s×%(max)s.")
        % {"width": width, "height": height, "max": side},
        "image_too_large",
    )


def _header_size(data: bytes, kind: str) -> tuple[int, int]:
    """The size a PNG's header claims (Pillow refused it as a bomb before telling us)."""
    if kind == "PNG" and len(data) >= 24:
        width, height = struct.unpack_from(">II", data, 16)
        return int(width), int(height)
    return (0, 0)


def normalize(data: bytes) -> InputImage:
    """Check an upload and re-encode it; :class:`ImageError` says what is wrong.

    Synchronous and CPU-bound: call :func:`prepare` from the event loop."""
    if len(data) > limits.MAX_IMAGE_UPLOAD_BYTES:
        raise ImageError(
            gettext("The image is %(size)s MB; the limit is %(max)s MB.")
            % {
                "size": f"{len(data) / 2**20:.1f}",
                "max": limits.MAX_IMAGE_UPLOAD_BYTES // 2**20,
            },
            "image_too_large",
        )
    kind = _sniff(data)
    _check_ending(data, kind)
    with warnings.catch_warnings():
        # Pillow warns (and at twice its limit raises) on big images; our bound comes first.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[kind])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(*_header_size(data, kind)) from exc
        except Exception as exc:  # Pillow raises many types on hostile input
            raise ImageError(gettext("The image is truncated or damaged.")) from exc
        width, height = image.size
        side = limits.MAX_IMAGE_SIDE
        if width > side or height > side:
            raise _too_many_pixels(width, height)
        small = limits.MIN_IMAGE_SIDE
        if width < small or height < small:
            raise ImageError(
                gettext(
                    "The image is %(width)s×%(height)s pixels; it needs at least %(min)s×%(min)s."
                )
                % {"width": width, "height": height, "min": small}
            )
        if getattr(image, "n_frames", 1) > 1:
            raise ImageError(gettext("Animated images are not supported; upload a still image."))
        try:
            image.load()
        except Exception as exc:
            raise ImageError(gettext("The image is truncated or damaged.")) from exc
    return _reencode(image)


def _reencode(image: Image.Image) -> InputImage:
    """Our PNG: upright, RGB on white, at most IMAGE_SIDE a side, no metadata."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    else:
        image = image.convert("RGB")
    image.thumbnail((limits.IMAGE_SIDE, limits.IMAGE_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # A new image's pixels only: no exif, icc_profile or pnginfo is passed on.
    Image.frombytes("RGB", image.size, image.tobytes()).save(out, format="PNG")
    return InputImage.of(out.getvalue(), image.width, image.height)


def _bounded(data: bytes) -> InputImage:
    with _decoding:
        return normalize(data)


async def prepare(data: bytes) -> InputImage:
    """:func:`normalize` on a worker thread, at most ``MAX_DECODING`` at once."""
    return await asyncio.to_thread(_bounded, data)


def columns(image: InputImage | None) -> dict[str, object]:
    """The job row's image columns (all NULL for a text job)."""
    if image is None:
        return {"image_sha256": None, "image_size": None, "image_width": None, "image_height": None}
    return {
        "image_sha256": image.sha256,
        "image_size": image.size,
        "image_width": image.width,
        "image_height": image.height,
    }


def store_for(store: BlobStore, jobs: Sequence[models.Job], image: InputImage) -> None:
    """Write the image once per job, atomically (call from a thread)."""
    for job in jobs:
        store.write(job.id, INPUT_KIND, image.png)


def remove_for(store: BlobStore, jobs: Sequence[models.Job]) -> None:
    """Undo :func:`store_for` for jobs that were not created after all (they have no
    other files: deleting all of theirs is deleting the picture)."""
    for job in jobs:
        store.delete(job.id)
