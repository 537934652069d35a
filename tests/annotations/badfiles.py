"""A corpus of bad image files, built by the tests themselves."""
import io
import struct
import zlib

from PIL import Image

from tests.helpers import jpeg_bytes, png_bytes


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width=20000, height=20000) -> bytes:
    """A 1-bit PNG of width x height pixels that is only a few kB on disk."""
    raw_row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(raw_row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bmp_huge_header() -> bytes:
    """A BMP header claiming 100000 x 100000 pixels, with no pixel data."""
    w = h = 100_000
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + dib


def animated_gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def multipage_tiff() -> bytes:
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, format="WEBP")
    return buf.getvalue()


def zip_as_image() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "hello")
    return buf.getvalue()


def tiff_truncated() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(buf, format="TIFF")
    return buf.getvalue()[:300]


def png_corrupt_idat() -> bytes:
    data = bytearray(png_bytes(size=(100, 100)))
    idx = data.find(b"IDAT") + 8
    data[idx : idx + 20] = b"\xff" * 20
    return bytes(data)


BAD_FILES = {
    "empty": b"",
    "truncated_jpeg": jpeg_bytes(size=(300, 300))[:400],
    "jpeg_header_only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "corrupt_png": png_corrupt_idat(),
    "png_bad_crc_header": b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17,
    "truncated_tiff": tiff_truncated(),
    "decompression_bomb_png": png_bomb(),
    "huge_dimensions_bmp": bmp_huge_header(),
    "animated_gif": animated_gif(),
    "multipage_tiff": multipage_tiff(),
    "webp": webp(),
    "svg_with_script": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "html_renamed_jpg": b"<!DOCTYPE html><html><body><script>alert('x')</script></body></html>",
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "plain_text": b"Patient: Jane Doe, born 1970-01-01",
    "zip_as_image": zip_as_image(),
    "random_bytes": bytes(range(256)) * 8,
}
