"""Input images of image-to-3D jobs: what is accepted, how it is re-encoded, what is refused."""

from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image, PngImagePlugin

from coordinator.services.job_images import ImageError, normalize
from protocol import limits
from tests.support.images import encoded


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_job_images_accepts_the_three_formats_as_our_png(fmt: str) -> None:
    out = normalize(encoded(fmt, (300, 200)))
    image = decoded(out.png)
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (300, 200))
    assert (out.width, out.height, out.size) == (300, 200, len(out.png))
    assert len(out.sha256) == 64


def test_job_images_strips_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 0.0)}  # GPS
    jpeg = encoded("JPEG", (64, 64), exif=exif.tobytes(), icc_profile=b"\0" * 128)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone@example.org")
    png = encoded("PNG", (64, 64), pnginfo=info)
    for data in (jpeg, png):
        out = normalize(data)
        image = decoded(out.png)
        assert not image.info.get("exif") and "icc_profile" not in image.info
        assert "Author" not in image.info and b"SecretCam" not in out.png
        assert b"someone@example.org" not in out.png


def test_job_images_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = normalize(encoded("JPEG", (80, 40), exif=exif.tobytes()))
    assert (out.width, out.height) == (40, 80)


def test_job_images_flattens_alpha_onto_white() -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 16, 32))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out = decoded(normalize(buffer.getvalue()).png)
    assert out.getpixel((24, 8)) == (255, 255, 255)
    assert out.getpixel((4, 8)) == (0, 0, 255)


def test_job_images_shrinks_to_the_kept_side() -> None:
    out = normalize(encoded("PNG", (3000, 1000)))
    assert (out.width, out.height) == (limits.IMAGE_SIDE, 341)
    assert out.size <= limits.MAX_IMAGE_BYTES


def test_job_images_worst_case_stays_within_the_wire_bound() -> None:
    noise = Image.frombytes("RGB", (4096, 4096), bytes(range(256)) * (4096 * 4096 * 3 // 256))
    buffer = io.BytesIO()
    noise.save(buffer, format="WEBP", quality=100)
    if len(buffer.getvalue()) <= limits.MAX_IMAGE_UPLOAD_BYTES:
        assert normalize(buffer.getvalue()).size <= limits.MAX_IMAGE_BYTES


def refusal(data: bytes) -> ImageError:
    with pytest.raises(ImageError) as info:
        normalize(data)
    return info.value


def test_job_images_refuses_too_many_bytes() -> None:
    error = refusal(b"\x89PNG\r\n\x1a\n" + b"\0" * limits.MAX_IMAGE_UPLOAD_BYTES)
    assert error.code == "image_too_large" and "10 MB" in str(error)


@pytest.mark.parametrize("size", [(4097, 16), (16, 5000)])
def test_job_images_refuses_too_many_pixels(size: tuple[int, int]) -> None:
    error = refusal(encoded("PNG", size))
    assert error.code == "image_too_large" and "4096×4096" in str(error)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG claiming ``width`` x ``height``, its pixels one zlib stream of zeros
    cut short: a decompression bomb's shape, a few hundred bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_job_images_refuses_a_decompression_bomb_before_decoding() -> None:
    started = time.perf_counter()
    error = refusal(png_header_only(60000, 60000))
    assert error.code == "image_too_large"
    assert time.perf_counter() - started < 1.0  # 10.8 GB of pixels were never allocated


def test_job_images_refuses_too_few_pixels() -> None:
    assert "at least 16×16" in str(refusal(encoded("PNG", (8, 64))))


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + b"\0" * 100,
        b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        b"<html><script>alert(1)</script></html>",
        b"",
        b"BM" + b"\0" * 100,
    ],
)
def test_job_images_refuses_other_formats(data: bytes) -> None:
    error = refusal(data)
    assert error.code == "image_unsupported" and "PNG, JPEG or WebP" in str(error)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_job_images_refuses_truncated_files(fmt: str) -> None:
    data = encoded(fmt, (200, 200), noisy=True)
    error = refusal(data[: len(data) * 2 // 3])
    assert error.code == "image_invalid" and "truncated" in str(error)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_job_images_refuses_polyglots(fmt: str) -> None:
    hidden = b"PK\x03\x04" + b"zip archive hidden after the image" * 10
    error = refusal(encoded(fmt, (64, 64)) + hidden)
    assert error.code == "image_invalid" and "after the end of the image" in str(error)


def test_job_images_allows_zero_padding_after_the_end() -> None:
    assert normalize(encoded("JPEG", (64, 64)) + b"\0" * 32).width == 64


def test_job_images_refuses_a_disguised_format() -> None:
    jpeg = encoded("JPEG", (64, 64))
    fake = b"\x89PNG\r\n\x1a\n" + jpeg
    assert refusal(fake).code == "image_invalid"


def test_job_images_refuses_animation() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    assert "Animated" in str(refusal(buffer.getvalue()))
