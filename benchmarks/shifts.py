"""Synthetic domain shifts of cell images: what another lab's stain, focus, magnification or camera
could do to the same cells. Used by benchmarks/ood.py (graded single shifts) and
benchmarks/adaptation.py (fixed "microscopes" a lab adapts to). Plain Python + Pillow/numpy
(scikit-image for the stain model); no Django, no torch.

The levels of :data:`DOMAINS` were fixed before any measurement, from what the literature and the
bccd-dev crops show of other labs (not fitted to any file).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

KINDS = ("hue", "saturation", "brightness", "blur", "scale", "jpeg", "hed")

# A synthetic "new lab": a name -> the shifts applied in order (kind, level)
DOMAINS: dict[str, tuple[tuple[str, object], ...]] = {
    # another Romanowsky stain batch: hue turned by 20 degrees, 30 % less saturated
    "stain": (("hue", 20), ("saturation", 0.7)),
    # a second stain model: haematoxylin 40 % stronger, eosin 30 % weaker (colour deconvolution)
    "hed": (("hed", (1.4, 0.7)),),
    # out of focus
    "blur": (("blur", 2.0),),
    # another objective / camera: cells 1.25x as large in the same frame
    "scale": (("scale", 1.25),),
    # a cheaper camera's compression
    "jpeg": (("jpeg", 30),),
}


def open_rgb(src) -> Image.Image:
    """A PIL image or a path, as RGB."""
    if isinstance(src, Image.Image):
        return src.convert("RGB")
    with Image.open(src) as im:
        return im.convert("RGB")


def shifted(src, kind: str, level) -> Image.Image:
    """One cell image (PIL or path) under one shift."""
    im = open_rgb(src)
    if kind == "hue":  # another stain's colour: rotate the hue by `level` degrees
        hsv = np.array(im.convert("HSV")).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(level / 360 * 255)) % 256
        return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    if kind == "saturation":
        return ImageEnhance.Color(im).enhance(level)
    if kind == "brightness":
        return ImageEnhance.Brightness(im).enhance(level)
    if kind == "blur":  # out of focus: Gaussian blur of `level` px
        return im.filter(ImageFilter.GaussianBlur(level))
    if kind == "scale":  # another magnification: the cell `level` times as large, same frame
        w, h = im.size
        big = im.resize((max(1, round(w * level)), max(1, round(h * level))), Image.BICUBIC)
        if level >= 1:
            x0, y0 = (big.width - w) // 2, (big.height - h) // 2
            return big.crop((x0, y0, x0 + w, y0 + h))
        bg = tuple(int(v) for v in np.median(np.array(im).reshape(-1, 3), 0))
        out = Image.new("RGB", (w, h), bg)
        out.paste(big, ((w - big.width) // 2, (h - big.height) // 2))
        return out
    if kind == "jpeg":  # a cheaper camera's compression: JPEG at quality `level`
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "hed":  # another stain: haematoxylin and eosin amounts scaled by `level` = (h, e)
        from skimage.color import hed2rgb, rgb2hed

        hed = rgb2hed(np.asarray(im))
        hed[..., 0] *= float(level[0])
        hed[..., 1] *= float(level[1])
        return Image.fromarray(np.clip(np.rint(hed2rgb(hed) * 255), 0, 255).astype(np.uint8), "RGB")
    raise ValueError(f"unknown shift {kind!r} (one of {', '.join(KINDS)})")


def apply_domain(src, domain: str) -> Image.Image:
    """A cell image (PIL or path) as the synthetic lab ``domain`` of :data:`DOMAINS` would show it."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r} (one of {', '.join(DOMAINS)})")
    im = open_rgb(src)
    for kind, level in DOMAINS[domain]:
        im = shifted(im, kind, level)
    return im


def write_domain(cells: list[tuple[Path, str]], domain: str, out: Path) -> list[tuple[Path, str]]:
    """The cells under ``domain``, written once as PNG (``out/<class>/<stem>.png``; same bytes on
    every run, so the feature cache keeps them), with their classes."""
    done = []
    for path, cls in cells:
        dst = out / cls / f"{Path(path).stem}.png"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".tmp")
            apply_domain(path, domain).save(tmp, format="PNG")
            tmp.replace(dst)
        done.append((dst, cls))
    return done
