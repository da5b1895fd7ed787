"""Previews from agents are decoded within a pixel bound and re-encoded, or dropped."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from coordinator.meshes.previews import MAX_SIDE, reencode
from tests.support.glbbombs import png_bomb


def _png(size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 0).save(out, format="PNG", **save)
    return out.getvalue()


def _noisy_png() -> bytes:
    out = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64))).save(
        out, format="PNG"
    )
    return out.getvalue()


def test_previews_reencode_keeps_pixels_and_drops_metadata() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "<script>alert(1)</script>")
    image = Image.new("RGBA", (5, 4), (1, 2, 3, 4))
    sent = io.BytesIO()
    image.save(sent, format="PNG", pnginfo=info)
    out = reencode(sent.getvalue() + b"<html>appended</html>")
    assert out is not None and b"script" not in out and b"html" not in out
    decoded = Image.open(io.BytesIO(out))
    assert decoded.format == "PNG" and decoded.size == (5, 4) and "Author" not in decoded.info
    assert decoded.convert("RGBA").getpixel((0, 0)) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body>hi</body></html>",
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        _noisy_png()[:150],  # truncated in the pixel data
    ],
    ids=["html", "empty", "png-magic-only", "truncated"],
)
def test_previews_reencode_refuses_what_is_not_a_png(data: bytes) -> None:
    assert reencode(data) is None


def test_previews_reencode_refuses_other_image_formats() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="GIF")
    assert reencode(out.getvalue()) is None


def test_previews_reencode_refuses_a_decompression_bomb_before_decoding() -> None:
    assert reencode(png_bomb(20000)) is None


@pytest.mark.parametrize(
    ("size", "ok"),
    [((MAX_SIDE, 1), True), ((MAX_SIDE + 1, 1), False), ((1, MAX_SIDE + 1), False)],
)
def test_previews_pixel_bound_is_per_side_inclusive(size: tuple[int, int], ok: bool) -> None:
    assert (reencode(_png(size, "L")) is not None) == ok
