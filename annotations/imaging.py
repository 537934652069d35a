"""Decode an uploaded image and re-encode its pixels alone (no Django here).

Every image that reaches storage went through :func:`sanitize_image`: decoded by Pillow under a
pixel limit, oriented, converted to 8-bit sRGB, and written as a fresh PNG that carries no
metadata at all (no EXIF, XMP, IPTC, ICC profile, text chunks, comments, GPS or maker notes).
PNG is lossless, so the stored pixels are exactly the decoded ones.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP")

#: The shortest side, in pixels, of an image this lab stores. A white cell is 7-20 µm across: a PBC
#: crop is 360x363 px, a BCCD white-cell crop 100-200 px, a cell found in a x40 field about 40-60 px.
#: Every backbone reads 224-299 px; a crop under 32 px would be blown up more than 7-fold, so nothing
#: of the nucleus or the granules the classes differ by is left to classify (a 1x1 "cell" was once
#: classified and queued). 32 px is the floor under every honest cell crop; fields are far larger.
MIN_IMAGE_SIDE = 32
_SNIFF = [
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP or other)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"8BPS", "a Photoshop document"),
]


class ImageRejected(ValueError):
    """The file is not an image this lab stores; the message says why, for the user."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class SanitizedImage:
    png_bytes: bytes
    sha256: str
    width: int
    height: int
    original_format: str


def _describe_unknown(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    for magic, what in _SNIFF:
        if data.startswith(magic):
            return what
    if head.startswith(b"<?xml") or b"<svg" in head:
        return "an SVG/XML document"
    if head.startswith(b"<!doctype html") or b"<html" in head or b"<script" in head:
        return "an HTML document"
    return "not a recognisable image"


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        lo = 0.0 if mode.startswith("I;16") else min(float(arr.min()), 0.0)
        arr8 = np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    if not icc:
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
    except Exception:  # noqa: BLE001 - an unreadable profile is dropped; the pixels stay as decoded
        return img


def sanitize_image(data: bytes, *, max_pixels: int, max_bytes: int | None = None,
                   min_side: int = MIN_IMAGE_SIDE) -> SanitizedImage:
    """Decode ``data`` and return its pixels as a metadata-free PNG, or raise ImageRejected.

    ``min_side``: the shortest side accepted (:data:`MIN_IMAGE_SIDE`, for every upload; only the
    slide pipeline's own crops of the cells it found, clipped at a field's border, pass less)."""
    if not data:
        raise ImageRejected("The file is empty.", "empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageRejected(
            f"The file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.", "too_large"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except UnidentifiedImageError:
        raise ImageRejected(
            f"The file is {_describe_unknown(data)}; accepted formats are JPEG, PNG, TIFF and BMP.", "format"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(f"The image has more than {max_pixels:,} pixels.", "too_many_pixels") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on a malformed header
        raise ImageRejected(f"The image header could not be read ({type(exc).__name__}).", "corrupt") from None

    fmt = img.format or "?"
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageRejected("The image has no pixels.", "corrupt")
    if min(width, height) < min_side:
        raise ImageRejected(
            f"The image is {width}x{height} pixels, too small to be a cell: each side needs at least "
            f"{min_side} pixels.", "too_small")
    if width * height > max_pixels:
        raise ImageRejected(
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}.",
            "too_many_pixels",
        )
    frames = getattr(img, "n_frames", 1)
    if frames != 1:
        raise ImageRejected(f"The file holds {frames} frames or pages; upload one image per file.", "multi_frame")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            icc = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img)
            rgb = _to_srgb(_to_rgb(img), icc)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise ImageRejected(f"The {fmt} image is corrupt or truncated ({type(exc).__name__}).", "corrupt") from None

    # A brand-new image object: nothing of the original's info dict can follow the pixels.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG", compress_level=1)  # 4x faster than level 6 for ~20% more bytes
    png = buf.getvalue()
    return SanitizedImage(
        png_bytes=png,
        sha256=hashlib.sha256(png).hexdigest(),
        width=clean.width,
        height=clean.height,
        original_format=fmt,
    )
