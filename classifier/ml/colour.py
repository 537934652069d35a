"""Colour standardisation: every image's colour mapped to a fixed reference before featurising.

Reinhard et al. (2001), "Color transfer between images", in CIE L*a*b*: each channel of the image
is shifted and scaled so that its mean and standard deviation over the image become the
reference's; then back to RGB (clipped to the gamut, rounded to uint8). Another lab's stain,
lamp or white balance moves these statistics; the model then sees its cells in the colours of
its own training images.

The reference is the mean, over the training cells, of each image's own Lab mean and standard
deviation (:func:`fit_reference`). It is part of the recipe (a constant: retraining after a lab
adds cells must not change what every cached image looks like) and of the checkpoint's config,
and its identity (:func:`identity`) is part of the feature cache's key: features of the plain
images are never reused for standardised ones, nor one reference's for another's.

Pure numpy + scikit-image; no Django.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Iterable

import numpy as np
from PIL import Image

REINHARD = "reinhard"
METHODS = (REINHARD,)
MIN_STD = 1e-3  # a flat channel (a blank image) is shifted, never divided by ~0


def _as_array(img) -> np.ndarray:
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError("expected an RGB uint8 image (H, W, 3)")
    return arr


GRID = 33  # the colour table's nodes per channel (Pillow's Color3DLUT, trilinear between them)
STATS_PIXELS = 40_000  # the statistics are read on at most about this many pixels (a regular subsample)
_CONSTANTS = None


def _constants():
    """scikit-image's sRGB / XYZ matrices and D65 white (2 degree observer), float32; the uint8 ->
    linear RGB table; the L*a*b* of the colour table's nodes (red fastest, as Pillow orders them)."""
    global _CONSTANTS
    if _CONSTANTS is None:
        from skimage.color.colorconv import rgb_from_xyz, xyz_from_rgb, xyz_tristimulus_values

        white = np.asarray(xyz_tristimulus_values(illuminant="D65", observer="2"), np.float32)
        to_xyz, from_xyz = xyz_from_rgb.astype(np.float32), rgb_from_xyz.astype(np.float32)
        linear = _srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
        b, g, r = np.meshgrid(*[np.linspace(0.0, 1.0, GRID)] * 3, indexing="ij")
        nodes = _srgb_to_linear(np.stack([r.ravel(), g.ravel(), b.ravel()], 1)).astype(np.float32)
        _CONSTANTS = (linear, to_xyz, from_xyz, white, None)
        _CONSTANTS = (linear, to_xyz, from_xyz, white, _linear_to_lab(nodes))
    return _CONSTANTS


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


def _linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """Linear RGB [N, 3] -> L*a*b* [N, 3], float32 (scikit-image's formulas)."""
    _, to_xyz, _, white, _ = _constants()
    xyz = np.asarray(lin, np.float32) @ (to_xyz.T / white)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], 1)


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """L*a*b* [N, 3] -> sRGB in [0, 1] (scikit-image's ``lab2rgb``: negative z clipped,
    out-of-gamut colours clipped), float32."""
    _, _, from_xyz, white, _ = _constants()
    lab = np.asarray(lab, np.float32)
    fy = (lab[:, 0] + 16.0) / 116.0
    f = np.stack([lab[:, 1] / 500.0 + fy, fy, np.maximum(fy - lab[:, 2] / 200.0, 0.0)], 1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * white
    lin = np.clip(xyz @ from_xyz.T, 0.0, 1.0)
    return np.where(lin > 0.0031308, 1.055 * np.power(lin, 1 / 2.4) - 0.055, 12.92 * lin)


def rgb_to_lab(arr: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 sRGB -> float32 [H*W, 3] CIE L*a*b* (D65): scikit-image's ``rgb2lab`` in float32,
    with a table for the sRGB curve (equal to 1e-3)."""
    return _linear_to_lab(_constants()[0][_as_array(arr).reshape(-1, 3)])


def lab_to_rgb(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float [H*W, 3] L*a*b* -> uint8 HxWx3 sRGB (scikit-image's ``lab2rgb``), rounded."""
    return np.clip(np.rint(_lab_to_srgb(lab) * 255.0), 0, 255).astype(np.uint8).reshape(*shape, 3)


def lab_stats(img, *, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image's (PIL or uint8 HxWx3) mean and standard deviation of L*, a*, b* over its
    pixels (``max_pixels``: over a regular subsample of at most about that many)."""
    arr = _as_array(img)
    if max_pixels and arr.shape[0] * arr.shape[1] > max_pixels:
        step = int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / max_pixels)))
        arr = arr[::step, ::step]
    lab = rgb_to_lab(arr).astype(np.float64)
    return lab.mean(0), lab.std(0)


def reinhard(img, *, mean: Iterable[float], std: Iterable[float]) -> np.ndarray:
    """The image (PIL or uint8 HxWx3) with its Lab mean and standard deviation per channel mapped
    to ``mean`` and ``std``: uint8 HxWx3.

    The image's statistics are read on a regular subsample (:data:`STATS_PIXELS`); the map (Lab,
    affine per channel, back to sRGB) is computed on the nodes of a :data:`GRID`-cubed colour table
    and applied by Pillow with trilinear interpolation: about 10x faster than per pixel, within
    a level or two of it."""
    from PIL import ImageFilter

    arr = _as_array(img)
    m, s = lab_stats(arr, max_pixels=STATS_PIXELS)
    scale = np.asarray(std, np.float64) / np.maximum(s, MIN_STD)
    shift = np.asarray(mean, np.float64) - m * scale
    table = _lab_to_srgb(_constants()[4] * scale.astype(np.float32) + shift.astype(np.float32))
    lut = ImageFilter.Color3DLUT(GRID, table.reshape(-1, 3))
    return np.asarray(Image.fromarray(arr, "RGB").filter(lut))


def fit_reference(images: Iterable) -> dict:
    """The reference of a set of images (PIL, paths or arrays): the mean of their own Lab means
    and standard deviations (the stored form: plain floats, JSON- and ``weights_only``-safe)."""
    means, stds = [], []
    for img in images:
        if not isinstance(img, (Image.Image, np.ndarray)):
            with Image.open(img) as im:
                img = im.convert("RGB")
        m, s = lab_stats(img)
        means.append(m)
        stds.append(s)
    if not means:
        raise ValueError("no images to fit a colour reference on")
    return {"method": REINHARD, "mean": [round(float(v), 4) for v in np.mean(means, 0)],
            "std": [round(float(v), 4) for v in np.mean(stds, 0)], "n_images": len(means)}


def check_reference(ref: dict | None) -> dict | None:
    """``ref`` validated (None: no standardisation)."""
    if ref is None:
        return None
    if not isinstance(ref, dict) or ref.get("method") not in METHODS:
        raise ValueError(f"colour_standardisation must be None or a dict with method in {METHODS}, not {ref!r}")
    for k in ("mean", "std"):
        v = ref.get(k)
        if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(np.isfinite(float(x)) for x in v):
            raise ValueError(f"colour_standardisation[{k!r}] must be three finite numbers")
    if min(float(x) for x in ref["std"]) <= 0:
        raise ValueError("colour_standardisation['std'] must be positive")
    return ref


def identity(ref: dict | None) -> str:
    """What the standardisation does, as a short string for the feature cache's key ("" when none)."""
    ref = check_reference(ref)
    if ref is None:
        return ""
    blob = json.dumps({"method": ref["method"], "mean": [float(x) for x in ref["mean"]],
                       "std": [float(x) for x in ref["std"]]}, sort_keys=True).encode()
    return f"{ref['method']}-{hashlib.sha256(blob).hexdigest()[:12]}"


def standardiser(ref: dict | None) -> Callable[[Image.Image], Image.Image] | None:
    """The function decoding applies to every RGB image (None: no standardisation)."""
    ref = check_reference(ref)
    if ref is None:
        return None
    mean, std = tuple(map(float, ref["mean"])), tuple(map(float, ref["std"]))

    def apply(img: Image.Image) -> Image.Image:
        return Image.fromarray(reinhard(img, mean=mean, std=std), "RGB")

    return apply
