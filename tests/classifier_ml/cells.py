"""Synthetic cell images for the pure ML tests (no database, no network, no weights)."""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["lymphocyte", "neutrophil_segmented", "platelet"]
_COLOURS = {"lymphocyte": (120, 60, 160), "neutrophil_segmented": (200, 140, 170), "platelet": (90, 160, 90)}
TINY = {"input_size": 64}
TINY_ENSEMBLE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def make_images(folder: Path, per_class: int, *, offset: int = 0, classes=CLASSES):
    """Class-coloured noisy discs on a pale background, like a stained cell in a crop."""
    from classifier.ml.api import TrainItem

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for ci, c in enumerate(classes):
        for i in range(offset, offset + per_class):
            rng = np.random.default_rng(1000 * ci + i)
            img = np.full((72, 72, 3), 235, np.float32) + rng.normal(0, 8, (72, 72, 3))
            yy, xx = np.mgrid[:72, :72]
            r = 14 + ci * 6 + rng.integers(-2, 3)
            disc = (yy - 36 + rng.integers(-4, 5)) ** 2 + (xx - 36 + rng.integers(-4, 5)) ** 2 < r * r
            img[disc] = np.array(_COLOURS[c]) + rng.normal(0, 12, (disc.sum(), 3))
            p = folder / f"{c}_{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
            items.append(TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=c))
    return items
