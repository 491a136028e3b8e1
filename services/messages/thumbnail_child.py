"""Decode one image and write its thumbnail: run as a child process with CPU and memory
limits (services/messages/thumbnails.py starts it), never inside a worker or the API.

Reads the image on standard input; writes `<media type>\\n<bytes>` on standard output and
exits 0, or writes a reason and exits 3 when the image is refused. Only Pillow is imported, so
the child starts fast and touches nothing of postroom.
"""

from __future__ import annotations

import io
import sys
import warnings

REFUSED = 3
# Past this many pixels an image is a decompression bomb: 40 MP is a 7,700 x 5,200 photo;
# a 20,000 x 20,000 image would take 400 MP (1.2 GB as RGB) to decode.
MAX_PIXELS = 40_000_000
FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "HEIF"}
# GIF and PNG sources keep lossless PNG (drawings, screenshots, transparency); photos WebP.
PNG_SOURCES = {"PNG", "GIF"}


def _refuse(reason: str) -> int:
    sys.stdout.write(reason)
    return REFUSED


def main() -> int:
    from PIL import Image

    side = int(sys.argv[1])
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse there too.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:  # HEIC where the pillow-heif plugin is installed; Pillow alone does not read it
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]

        register_heif_opener()
    except ImportError:
        pass
    Image.init()
    formats = sorted(f for f in FORMATS if f in Image.OPEN)
    data = sys.stdin.buffer.read()
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            source = im.format or ""
            width, height = im.size
            if width * height > MAX_PIXELS:
                return _refuse("too_many_pixels")
            im.draft("RGB", (side, side))  # JPEG decodes at 1/2 to 1/8 scale: less work
            im.thumbnail((side, side))
            thumb: Image.Image = im
            out = io.BytesIO()
            if source in PNG_SOURCES:
                if thumb.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                    thumb = thumb.convert("RGBA")
                thumb.save(out, format="PNG", optimize=True)
                media = "image/png"
            else:
                thumb = thumb.convert("RGBA" if "A" in thumb.getbands() else "RGB")
                thumb.save(out, format="WEBP", quality=80, method=4)
                media = "image/webp"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _refuse("too_many_pixels")
    except MemoryError:
        return _refuse("memory_limit")
    except Exception:  # any decoder error: truncated, corrupt, not an image
        return _refuse("unreadable")
    sys.stdout.buffer.write(f"{media}\n{thumb.width} {thumb.height}\n".encode() + out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
