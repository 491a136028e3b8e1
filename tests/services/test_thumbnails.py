"""Thumbnails made in a limited child process: real images become small ones, hostile ones
are refused cheaply (issue 23 item 6)."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import pytest
from PIL import Image

from services.messages.thumbnails import MAX_SIDE, render


def jpeg(width: int = 1600, height: int = 1200) -> bytes:
    image = Image.new("RGB", (width, height))
    for x in range(0, width, 40):  # something to compress, not one flat colour
        image.paste((x % 256, 90, 200), (x, 0, x + 20, height))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def png(width: int = 900, height: int = 1400, mode: str = "RGBA") -> bytes:
    image = Image.new(mode, (width, height), (10, 200, 30, 128) if mode == "RGBA" else 0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels (400 MP at 20,000) in about 50 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


async def test_a_jpeg_becomes_a_webp_of_at_most_256_px() -> None:
    made = await render(jpeg())
    assert made.media_type == "image/webp", made.reason
    back = Image.open(io.BytesIO(made.content or b""))
    back.load()
    assert back.format == "WEBP"
    assert max(back.size) == MAX_SIDE and back.size == (256, 192)
    assert (made.width, made.height) == back.size


async def test_a_png_stays_a_png_with_its_transparency() -> None:
    made = await render(png())
    assert made.media_type == "image/png", made.reason
    back = Image.open(io.BytesIO(made.content or b""))
    back.load()
    assert back.format == "PNG" and back.size == (165, 256)
    assert back.mode == "RGBA" and back.getpixel((10, 10))[3] == 128


async def test_a_gif_becomes_a_png_and_a_small_image_is_not_enlarged() -> None:
    out = io.BytesIO()
    Image.new("P", (40, 30)).save(out, format="GIF")
    made = await render(out.getvalue())
    assert made.media_type == "image/png"
    assert Image.open(io.BytesIO(made.content or b"")).size == (40, 30)


async def test_a_decompression_bomb_is_refused_in_under_a_second_of_cpu() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    before_self, before_children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    start = time.monotonic()
    made = await render(bomb)
    wall = time.monotonic() - start
    after_self, after_children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = sum(
        getattr(after, f) - getattr(before, f)
        for before, after in ((before_self, after_self), (before_children, after_children))
        for f in ("ru_utime", "ru_stime")
    )
    assert made.content is None and made.reason == "too_many_pixels"
    assert cpu < 1.0, f"the bomb cost {cpu:.2f} s of CPU"
    assert wall < 5.0


@pytest.mark.parametrize("make", [jpeg, png], ids=["jpeg", "png"])
async def test_a_truncated_image_is_refused(make) -> None:
    whole = make()
    made = await render(whole[: len(whole) // 2])
    assert made.content is None and made.reason == "unreadable"


async def test_what_is_not_an_image_is_refused() -> None:
    for data in (b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"GIF89a", b"\x00" * 100):
        made = await render(data)
        assert made.content is None and made.reason == "unreadable"
