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


def seed_learning_curve(*, user, scope=None) -> dict:
    """A small case for the per-source learning curve, with figures to check by hand.

    Source "Scope B", six uploaded cells labelled by experts (c1-c3 monocyte, c4-c6 lymphocyte) and one
    slide with two cells (one verified by a person, one not):

    * v1 (trained on no cell of Scope B) refers all six uploaded cells; its best guess is right on c1-c3:
      verified 6, referred 6 (100 %), no accepted call (accuracy —), accepted and wrong 0 %, best guess
      right on 3/6 = 50 %.
    * v2 trained on c5 and c6 (left out of its figures): it accepts c1-c3 right and c4 wrong (called
      monocyte) and refers the verified slide cell with the right best guess: verified 5, referred 1
      (20 %), accepted calls right 3/4 = 75 %, accepted and wrong 1/5 = 20 %, best guess right 1/1 = 100 %,
      trained on 2. The slide's unverified cell and an unlabelled cell do not count.

    The default source: one cell, labelled monocyte, that v2 accepts right (verified 1, 100 %).
    ``scope``: the source to use as Scope B (made when not given).
    """
    from annotations.services import image_upload
    from classifier.models import ModelVersion, Prediction
    from slides.models import Slide, SlideCell
    from sources.models import Source
    from tests.factories import ModelVersionFactory, SourceFactory
    from tests.helpers import png_bytes

    scope = scope or SourceFactory(name="Scope B")
    mono, lymph = CellClass.objects.get(code="monocyte"), CellClass.objects.get(code="lymphocyte")
    truth = [mono] * 3 + [lymph] * 3
    cells = []
    for i, cls in enumerate(truth):
        image = CellImageFactory(data=png_bytes(color=(10 + i, 90, 90)), uploaded_by=user, acquisition_source=scope)
        CellImage.objects.filter(pk=image.pk).update(final_label=cls, final_label_at=timezone.now())
        cells.append(image)
    unlabelled = CellImageFactory(data=png_bytes(color=(10, 91, 90)), uploaded_by=user, acquisition_source=scope)
    home = CellImageFactory(data=png_bytes(color=(10, 92, 90)), uploaded_by=user)
    CellImage.objects.filter(pk=home.pk).update(final_label=mono, final_label_at=timezone.now())

    v1 = ModelVersionFactory(status=ModelVersion.Status.RETIRED, snapshot={"items": []})
    v2 = ModelVersionFactory(status=ModelVersion.Status.ACTIVE,
                             snapshot={"items": [[cells[4].pk, "lymphocyte"], [cells[5].pk, "lymphocyte"]]})

    def predict(image, version, top, *, referred):
        Prediction.objects.create(image=image, model_version=version, top_class=top, confidence=0.5 if referred else 0.95,
                                  label="unidentified" if referred else top, abstained=referred,
                                  reasons=["out_of_distribution"] if referred else [], agreement=1, n_backbones=1)

    for i, image in enumerate(cells):
        predict(image, v1, "monocyte", referred=True)  # right on c1-c3 only
    for image in cells[:4]:
        predict(image, v2, "monocyte", referred=False)  # c4 is a lymphocyte: accepted and wrong
    for image in cells[4:]:
        predict(image, v2, "lymphocyte", referred=False)  # its own training cells: left out
    predict(unlabelled, v2, "monocyte", referred=False)
    predict(home, v2, "monocyte", referred=False)

    slide = Slide.objects.create(code="LC-1", created_by=user, kind="cells", acquisition_source=scope,
                                 status=Slide.Status.READY)
    for j, verified in enumerate((True, False)):
        image = image_upload(data=png_bytes(color=(10 + j, 93, 90)), uploaded_by=user, source="slide_cell",
                             enqueue_classification=False, acquisition_source=scope).image
        SlideCell.objects.create(slide=slide, image=image, top_class="lymphocyte", predicted_class="unidentified",
                                 reasons=["low_confidence"], model_version=v2, final_class=lymph,
                                 changed_by=user if verified else None, changed_at=timezone.now() if verified else None)
    return {"scope": scope, "default": Source.objects.get(is_default=True), "v1": v1, "v2": v2, "cells": cells}
