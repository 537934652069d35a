"""Image preprocessing shared by training, caching and inference.

An image is decoded once, resized once per distinct input size (all backbones with the same
input size share the resized tensor), then normalised per backbone on the tensor. Views are
the eight symmetries of the square (white cells have no preferred orientation): used as cached
augmentations when training heads and as test-time augmentation.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

# Bump when anything below changes what a backbone sees (it is part of the feature-cache key).
PREPROCESS_VERSION = "pp1-fullframe-bilinear"

# The dihedral group D4: rotation by k*90 degrees, optionally after a horizontal flip.
VIEWS: tuple[str, ...] = ("id", "rot90", "rot180", "rot270", "flip", "flip_rot90", "flip_rot180", "flip_rot270")
MAX_PIXELS = 40_000_000

ImageLike = "Image.Image | Path | str"
Standardise = Optional[Callable[[Image.Image], Image.Image]]


def load_image(src) -> Image.Image:
    """Decode an image (PIL image, path) to RGB, refusing absurdly large ones."""
    if isinstance(src, Image.Image):
        img = src
    else:
        img = Image.open(src)
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"{src}: image too large ({img.width}x{img.height})")
    return img.convert("RGB") if img.mode != "RGB" else img


def resize_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """The whole frame resized to size x size (the cell is centred in the crop), uint8 CHW."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_resized(src, sizes: Sequence[int], standardise: Standardise = None) -> dict[int, torch.Tensor]:
    """Decode, standardise the colour (``standardise``: :func:`classifier.ml.colour.standardiser`,
    at the decoded size, once for every input size), resize."""
    img = load_image(src)
    if standardise is not None:
        img = standardise(img)
    return {s: resize_uint8(img, s) for s in sizes}


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or float 0..255) NCHW -> float normalised with the backbone's mean/std (on 0..1)."""
    x = x.float()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x - m) / s


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """Apply one of :data:`VIEWS` to an NCHW batch of square images."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}")
    if view.startswith("flip"):
        x = x.flip(3)
    k = {"id": 0, "flip": 0}.get(view)
    if k is None:
        k = int(view.rsplit("rot", 1)[1]) // 90
    return torch.rot90(x, k, (2, 3)) if k else x


def batched_resized(
    sources: Sequence, sizes: Sequence[int], batch_size: int, workers: int | None = None,
    standardise: Standardise = None,
) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
    """Yield (start index, {size: uint8 [B,3,S,S]}) batches; decoding (and the colour
    standardisation, if any) runs ahead in threads (Pillow and numpy release the GIL) so it
    overlaps the network's work."""
    sizes = sorted(set(sizes))
    if workers is None:  # decoding threads: a few more than the batches kept in flight on big machines
        workers = max(2, min(8, (os.cpu_count() or 2) // 2))

    def load_batch(start: int):
        per = [load_resized(s, sizes, standardise) for s in sources[start:start + batch_size]]
        return start, {sz: torch.stack([p[sz] for p in per]) for sz in sizes}

    starts = list(range(0, len(sources), batch_size))
    if not starts:
        return
    ahead = max(2, workers)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(load_batch, s) for s in starts[:ahead]]
        nxt = ahead
        while pending:
            fut = pending.pop(0)
            if nxt < len(starts):
                pending.append(pool.submit(load_batch, starts[nxt]))
                nxt += 1
            yield fut.result()


def chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
