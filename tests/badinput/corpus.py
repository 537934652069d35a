"""The bad-input corpus, built by the tests themselves (nothing is downloaded or checked in).

Three families:
- ``BAD_IMAGES``: files that must be refused by the image upload (the 17 of
  tests/annotations/badfiles.py plus more kinds below, images too small to be a cell among them);
- ``ODD_BUT_VALID_IMAGES``: 16-bit, CMYK, palette, 1-bit... images that are accepted and
  converted to 8-bit RGB; polyglots whose trailing payload (with a planted name) must vanish;
- ``BAD_ARCHIVES``: zip files that must be refused whole.

The EXIF/XMP/IPTC/ICC/PNG-text/TIFF-tag files carrying a planted patient name are those of
tests/annotations/test_upload.py (``planted_files``); they are reused here through the API.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

from tests.annotations.badfiles import BAD_FILES, _png_chunk
from tests.helpers import jpeg_bytes, png_bytes

PLANTED = b"Jane Doe"


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
            + _png_chunk(b"IDAT", zlib.compress(raw_rows)) + _png_chunk(b"IEND", b""))


def png_rgb16(width=40, height=32) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG, written by hand: Pillow cannot write one."""
    rows = b"".join(
        b"\x00" + b"".join(struct.pack(">HHH", (x * 5000) % 65536, (y * 6000) % 65536, 40000) for x in range(width))
        for y in range(height)
    )
    return _png(width, height, 16, 2, rows)


def png_rgba16(width=32, height=32) -> bytes:
    rows = b"".join(b"\x00" + struct.pack(">HHHH", 60000, 1000, 30000, 50000) * width for _ in range(height))
    return _png(width, height, 16, 6, rows)


def png_zero_width() -> bytes:
    return _png(0, 10, 8, 2, b"")


def png_truncated_idat() -> bytes:
    data = png_bytes(size=(120, 120))
    cut = data.find(b"IDAT") + 30
    return data[:cut]


def jpeg_huge_sof() -> bytes:
    """A real JPEG whose frame header claims 65000 x 65000 pixels."""
    data = bytearray(jpeg_bytes(size=(16, 16)))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65000, 65000)
    return bytes(data)


def tiff_huge_dimensions() -> bytes:
    """A TIFF header claiming 200000 x 200000 pixels, with a few bytes of strip."""
    entries = [
        (256, 4, 1, 200_000), (257, 4, 1, 200_000), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (278, 4, 1, 200_000), (279, 4, 1, 4),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4


def polyglot_png_html() -> bytes:
    """Starts like a PNG, carries an HTML page with a script: not a decodable image."""
    return b"\x89PNG\r\n\x1a\n" + b"<html><script>alert(document.cookie)</script>Jane Doe</html>"


def polyglot_gif_js() -> bytes:
    """A GIF header that is also valid JavaScript (the classic GIFAR/GIF-JS polyglot)."""
    return b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert('Jane Doe');"


def polyglot_jpeg_zip() -> bytes:
    """A valid JPEG with a zip (holding a planted name) appended: decodes, the payload must vanish."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("patient.txt", PLANTED + b", born 1970-01-01")
    return jpeg_bytes(size=(40, 40)) + buf.getvalue()


def polyglot_png_trailing_html() -> bytes:
    """A valid PNG followed by an HTML page with a script and a planted name after IEND."""
    return png_bytes(size=(40, 40)) + b"<html><script>alert(1)</script>" + PLANTED + b"</html>"


def bmp_negative_size() -> bytes:
    header = b"BM" + struct.pack("<IHHI", 54 + 12, 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, -4, -(2**31 - 1), 1, 24, 0, 12, 2835, 2835, 0, 0)
    return header + dib + b"\x00" * 12


def gif_single_frame() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16), 3).save(buf, format="GIF")
    return buf.getvalue()


def ico() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buf, format="ICO")
    return buf.getvalue()


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


BAD_IMAGES: dict[str, bytes] = {
    **BAD_FILES,  # 17 kinds: empty, truncated/corrupt JPEG/PNG/TIFF, bombs, GIF, SVG+script, HTML as .jpg, ...
    "png_zero_width": png_zero_width(),
    "png_truncated_idat": png_truncated_idat(),
    "jpeg_huge_dimensions": jpeg_huge_sof(),
    "tiff_huge_dimensions": tiff_huge_dimensions(),
    "bmp_negative_size": bmp_negative_size(),
    "polyglot_png_html": polyglot_png_html(),
    "polyglot_gif_js": polyglot_gif_js(),
    "gif_single_frame": gif_single_frame(),
    "ico": ico(),
    "png_1x1": png_bytes(size=(1, 1)),  # too small to be a cell (annotations.imaging.MIN_IMAGE_SIDE)
    "jpeg_31px_high": jpeg_bytes(size=(400, 31)),
    "null_bytes": b"\x00" * 4096,
    "utf16_text": "Patient Jane Doe".encode("utf-16"),
}

ODD_BUT_VALID_IMAGES: dict[str, bytes] = {
    "png_rgb_16bit": png_rgb16(),
    "png_rgba_16bit": png_rgba16(),
    "png_grey_16bit": _save(Image.new("I;16", (40, 32), 50000), "PNG"),
    "tiff_grey_16bit": _save(Image.new("I;16", (40, 32), 1234), "TIFF"),
    "jpeg_cmyk": _save(Image.new("CMYK", (40, 32), (0, 120, 40, 10)), "JPEG"),
    "tiff_cmyk": _save(Image.new("CMYK", (40, 32), (200, 10, 40, 0)), "TIFF"),
    "png_palette_transparent": _save(Image.new("P", (40, 32), 5), "PNG", transparency=5),
    "png_1bit": _save(Image.new("1", (40, 32), 1), "PNG"),
    "tiff_float32": _save(Image.new("F", (40, 32), 0.25), "TIFF"),
    "tiff_lab": _save(Image.new("LAB", (40, 32), (50, 10, 10)), "TIFF"),
    "polyglot_jpeg_zip": polyglot_jpeg_zip(),
    "polyglot_png_trailing_html": polyglot_png_trailing_html(),
}


# --- Archives -----------------------------------------------------------------------------
def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_raw_names(names: list[bytes], utf8_flag: bool) -> bytes:
    """Entries whose names are the given raw bytes; ``utf8_flag`` sets general-purpose bit 11."""
    placeholders = [str(i).encode().rjust(len(raw) - 4, b"q") + b".png" for i, raw in enumerate(names)]
    data = _zip([(p.decode(), png_bytes((i, 9, 9), size=(32, 32))) for i, p in enumerate(placeholders)],
                zipfile.ZIP_STORED)
    out = bytearray(data)
    for ph, raw in zip(placeholders, names):
        start = 0
        while (idx := out.find(ph, start)) != -1:
            out[idx : idx + len(ph)] = raw
            # flag bits sit 22 bytes before the name in a local header, 32 in a central one
            for back in (22, 32):
                sig_at = idx - (30 if back == 22 else 46)
                if sig_at >= 0 and out[sig_at : sig_at + 4] in (b"PK\x03\x04", b"PK\x01\x02"):
                    flag_at = sig_at + (6 if out[sig_at + 2] == 3 else 8)
                    flags = struct.unpack_from("<H", out, flag_at)[0]
                    flags = flags | 0x800 if utf8_flag else flags & ~0x800
                    struct.pack_into("<H", out, flag_at, flags)
            start = idx + len(raw)
    return bytes(out)


def zip_encrypted_flag() -> bytes:
    """The 'encrypted' flag set on an entry (zipfile clears it on write, so patch both headers)."""
    out = bytearray(_zip([("secret.png", png_bytes())], zipfile.ZIP_STORED))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(sig)
        out[at + offset] |= 0x1
    return bytes(out)


def zip_symlink_dir() -> bytes:
    info = zipfile.ZipInfo("cells/")
    info.external_attr = 0o120777 << 16
    return _zip([("ok.png", png_bytes()), (info, b"/etc")])


def zip_windows_absolute() -> bytes:
    return _zip([("ok.png", png_bytes()), ("C:\\Windows\\evil.png", png_bytes((1, 1, 1)))])


def zip_backslash_dotdot() -> bytes:
    return _zip([("ok.png", png_bytes()), ("..\\..\\evil.png", png_bytes((1, 1, 2)))])


def zip_bomb_ratio() -> bytes:
    return _zip([("ok.png", png_bytes()), ("bomb.png", b"\x00" * (80 * 1024 * 1024))])


def zip_truncated() -> bytes:
    return _zip([("ok.png", png_bytes()), ("two.png", png_bytes((3, 3, 3)))])[:-30]


def zip_entries_file(path, n: int) -> None:
    """Write a real zip of ``n`` tiny stored entries to ``path`` (100,000 take about a second)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(zipfile.ZipInfo(f"{i:06d}.png"), b"x")


BAD_ARCHIVES: dict[str, bytes] = {
    "zip_dotdot": _zip([("ok.png", png_bytes()), ("../../etc/evil.png", png_bytes((9, 9, 9)))]),
    "zip_absolute": _zip([("ok.png", png_bytes()), ("/tmp/evil.png", png_bytes((9, 9, 8)))]),
    "zip_windows_absolute": zip_windows_absolute(),
    "zip_backslash_dotdot": zip_backslash_dotdot(),
    "zip_symlink_directory": zip_symlink_dir(),
    "zip_encrypted": zip_encrypted_flag(),
    "zip_bomb": zip_bomb_ratio(),
    "zip_truncated": zip_truncated(),
    "zip_invalid_utf8_names": zip_with_raw_names([b"\xff\xfeJane.png"], utf8_flag=True),
    "not_a_zip": b"PK\x03\x04 this is not really a zip",
}
