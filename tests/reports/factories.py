"""Synthetic cells (three colours = three classes), stored as CellImages, and tiny trained ensembles."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from django.utils import timezone
from PIL import Image

from annotations.models import CellClass, CellImage
from tests.factories import CellImageFactory, TrainedModelVersionFactory

COLOURS = {"eosinophil": (60, 200, 60), "lymphocyte": (60, 60, 200), "neutrophil_segmented": (200, 60, 60)}
CLASSES = sorted(COLOURS)


def cell_png(code: str, seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(COLOURS[code], 30, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_set(train_per_class: int = 10, heldout_per_class: int = 4) -> dict[str, list[tuple[bytes, str]]]:
    out = {"train": [], "heldout": []}
    for ci, code in enumerate(CLASSES):
        for i in range(train_per_class + heldout_per_class):
            split = "train" if i < train_per_class else "heldout"
            out[split].append((cell_png(code, 1000 * ci + i), code))
    return out


def store_cells(cells: list[tuple[bytes, str]], *, split: str, user, final: bool = True) -> list:
    """Upload cells and give each its final label directly (as if the experts had agreed)."""
    classes = {c.code: c for c in CellClass.objects.all()}
    images = []
    for data, code in cells:
        image = CellImageFactory(data=data, uploaded_by=user, split=split)
        if final:
            CellImage.objects.filter(pk=image.pk).update(final_label=classes[code], final_label_at=timezone.now())
            image.refresh_from_db()
        images.append(image)
    return images


def train_items(cells: list[tuple[bytes, str]], root: Path, *, shuffle_seed: int | None = None):
    from classifier.ml.api import TrainItem
    import hashlib

    root.mkdir(parents=True, exist_ok=True)
    labels = [code for _, code in cells]
    if shuffle_seed is not None:
        labels = list(np.random.default_rng(shuffle_seed).permutation(labels))
    items = []
    for i, ((data, _), label) in enumerate(zip(cells, labels)):
        p = root / f"{i}.png"
        p.write_bytes(data)
        items.append(TrainItem(path=p, sha256=hashlib.sha256(data).hexdigest(), label=str(label)))
    return items


def train_tiny(items, out_dir: Path, cache_dir: Path, epochs: int = 30):
    """A one-backbone, randomly initialised ensemble on 64-pixel inputs with one view: seconds on a
    CPU, and it separates the three colours perfectly."""
    from classifier.ml import api

    return api.train(items, classes=CLASSES, ensemble=["efficientnet_lite0"], mode="default", epochs=epochs,
                     weights=None, cache_dir=cache_dir, out_dir=out_dir, device="cpu",
                     config_overrides={"views": ["id"], "tta_views": ["id"], "input_size": 64})


def register_version(result, *, name: str, train_images: list, labels: list[str] | None = None, user=None):
    """Copy a session-trained checkpoint under this test's MODEL_DIR and make it a candidate version."""
    labels = labels or [img.final_label.code for img in train_images]
    snapshot = {"source": "labels", "items": [[img.pk, img.sha256, code] for img, code in zip(train_images, labels)]}
    return TrainedModelVersionFactory(result=result, folder=name, ensemble="offline", mode="default", snapshot=snapshot,
                                      created_by=user)
