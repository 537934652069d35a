"""Helpers run inside Django on the private fault stack: `python -m tests.faults.agent CMD JSON`.

Each prints one JSON line (its answer). They call the project's services, as a user would.
"""
import io
import json
import sys

import django


def _cell_png(class_index: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.full((40, 40, 3), 235, np.float32) + rng.normal(0, 8, (40, 40, 3))
    yy, xx = np.mgrid[:40, :40]
    r = 7 + class_index * 5
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 < r * r
    img[disc] = np.array([(120, 60, 160), (200, 140, 170)][class_index % 2]) + rng.normal(0, 10, (int(disc.sum()), 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


CLASSES = ["lymphocyte", "neutrophil_segmented"]


def users(*, labellers: int = 4, reviewers: int = 2, prefix: str = "u"):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    out = {}
    for role, n in (("labeller", labellers), ("reviewer", reviewers)):
        for i in range(n):
            name = f"{prefix}-{role}-{i}"
            user, _ = User.objects.get_or_create(username=name)
            user.groups.add(Group.objects.get(name=role))
            token, _ = Token.objects.get_or_create(user=user)
            out[name] = {"id": user.pk, "token": token.key, "role": role}
    return out


def _expert():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="fault-expert")
    user.groups.add(Group.objects.get(name="lab_admin"))
    return user


def images(*, n: int, seed: int, labelled: bool = False):
    from annotations.models import CellClass
    from annotations.services import image_upload, label_submit

    expert = _expert()
    ids = []
    for i in range(n):
        ci = i % 2
        image = image_upload(data=_cell_png(ci, seed * 100_000 + i), uploaded_by=expert,
                             enqueue_classification=False).image
        if labelled:
            label_submit(image=image, labeller=expert, cell_class=CellClass.objects.get(code=CLASSES[ci]))
        ids.append(image.pk)
    return ids


def model(*, seed: int = 1):
    """A tiny single-backbone model trained on synthetic cells, registered and activated."""
    import tempfile
    from pathlib import Path

    from django.conf import settings

    from classifier.ml import api
    from classifier.services import model_version_activate, model_version_from_training
    from tests.faults.stack import TINY_BACKBONE, TINY_RECIPE

    work = Path(tempfile.mkdtemp())
    items = []
    for i in range(8):
        p = work / f"{i}.png"
        p.write_bytes(_cell_png(i % 2, 900_000 + seed * 100 + i))
        import hashlib

        items.append(api.TrainItem(path=p, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), label=CLASSES[i % 2]))
    out = Path(settings.MODEL_DIR) / f"tiny-{seed}"
    result = api.train(items, classes=CLASSES, ensemble=[TINY_BACKBONE], mode="frozen", epochs=3, weights=None,
                       cache_dir=Path(settings.FEATURE_CACHE_DIR), out_dir=out, device="cpu",
                       config_overrides=TINY_RECIPE)
    version = model_version_from_training(result=result, ensemble="tiny", mode="frozen",
                                          snapshot={"source": "synthetic", "items": []})
    model_version_activate(version=version, reason="promotion")
    return version.pk


def active():
    from classifier.selectors import model_version_active

    version = model_version_active()
    return version.pk if version else None


def classify(*, ids: list, per_task: int = 4):
    from classifier.selectors import model_version_active
    from classifier.tasks import classify_images

    version = model_version_active()
    for start in range(0, len(ids), per_task):
        classify_images.apply_async(args=[ids[start : start + per_task], version.pk])
    return version.pk


def sweep(*, grace_s: int = 0, slide_stale_s: int = 300, training_stale_s: int = 600):
    """The beat's sweep; the scenarios know their messages are lost, so no grace period by default."""
    from leukoportal.services import work_sweep

    return work_sweep(grace_s=grace_s, slide_stale_s=slide_stale_s, training_stale_s=training_stale_s)


def training(*, epochs: int = 60, retry_of: int | None = None):
    """Queue a training run of the tiny backbone (as the admin page does, through the broker)."""
    from django.db import transaction

    from classifier.models import TrainingRun
    from classifier.services import training_run_enqueue_on_commit
    from tests.faults.stack import TINY_BACKBONE

    with transaction.atomic():
        run = TrainingRun.objects.create(ensemble=TINY_BACKBONE, mode="frozen", epochs=epochs, trigger="cli",
                                         retry_of_id=retry_of, progress={"stage": "queued"})
        training_run_enqueue_on_commit(run_id=run.pk)
    return run.pk


def mark_stale(*, older_than_s: int):
    from classifier.services import training_runs_mark_stale

    return training_runs_mark_stale(older_than_s=older_than_s)


def review_cells(*, n: int, seed: int):
    """Cells two labellers disagree on: waiting for a reviewer."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from annotations.models import CellClass
    from annotations.services import label_submit

    ids = images(n=n, seed=seed)
    User = get_user_model()
    a, _ = User.objects.get_or_create(username="fault-reader-a")
    b, _ = User.objects.get_or_create(username="fault-reader-b")
    for u in (a, b):
        u.groups.add(Group.objects.get(name="labeller"))
    from annotations.models import CellImage

    for pk in ids:
        image = CellImage.objects.get(pk=pk)
        label_submit(image=image, labeller=a, cell_class=CellClass.objects.get(code="monocyte"))
        label_submit(image=image, labeller=b, cell_class=CellClass.objects.get(code="lymphocyte"))
    assert CellImage.objects.filter(pk__in=ids, needs_review=True).count() == len(ids)
    return ids


def slide(*, fields: int, code: str):
    """A slide of ``fields`` smear fields (the demo fields, then their mirror images and rotations, so
    that each is a distinct image), its processing queued as the upload page does, through the broker."""
    from pathlib import Path

    from PIL import Image

    from slides.services import slide_create, slide_images_add

    expert = _expert()
    sources = sorted((Path(__file__).resolve().parents[2] / "demo" / "fields").glob("*.jpg"))
    variants = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180]
    files = []
    for i in range(fields):
        image = Image.open(sources[i % len(sources)]).convert("RGB")
        variant = variants[(i // len(sources)) % len(variants)]
        buf = io.BytesIO()
        (image.transpose(variant) if variant is not None else image).save(buf, format="PNG")
        files.append((f"field-{i}.png", buf.getvalue()))
    created = slide_create(code=code, created_by=expert)
    slide_images_add(slide=created, files=files, uploaded_by=expert)
    return created.pk


COMMANDS = {f.__name__: f for f in (users, images, model, active, classify, sweep, training, mark_stale, review_cells,
                                    slide)}

if __name__ == "__main__":
    django.setup()
    name, args = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    print(json.dumps(COMMANDS[name](**args)))
