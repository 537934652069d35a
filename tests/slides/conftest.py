"""Slide fixtures: a tiny ensemble trained once per session (random weights, so no download),
registered as the active model version of each test's database."""
import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_CELLS, REPO, pbc_split  # noqa: F401 (re-exported)

DEMO_FIELDS = REPO / "demo" / "fields"


def field_paths(n=2):
    return sorted(DEMO_FIELDS.glob("*.jpg"))[:n]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from classifier.ml.api import TrainItem, train

    items = []
    for folder in sorted(p for p in DEMO_CELLS.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir())[:6]:
            items.append(TrainItem(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=folder.name))
    base = tmp_path_factory.mktemp("tiny-model")
    result = train(items, classes=sorted({i.label for i in items}), ensemble=["efficientnet_lite0"], mode="frozen",
                   weights=None, epochs=2, cache_dir=base / "cache", out_dir=base / "out", device="cpu",
                   config_overrides={"input_size": 64})
    return result


def register_model(settings, result, *, activate=True):
    """Copy the session's checkpoint under this test's MODEL_DIR and make it a model version."""
    from dataclasses import replace

    from classifier.services import model_version_activate, model_version_from_training

    dest_dir = Path(settings.MODEL_DIR) / "tiny"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / Path(result.checkpoint_path).name
    shutil.copy2(result.checkpoint_path, dest)
    version = model_version_from_training(result=replace(result, checkpoint_path=dest), ensemble="tiny",
                                          mode="frozen", snapshot={"items": []})
    if activate:
        model_version_activate(version=version)
    return version


@pytest.fixture
def active_model(db, settings, tiny_checkpoint):
    return register_model(settings, tiny_checkpoint)


@pytest.fixture
def reference_intervals(db):
    from django.apps import apps

    from slides.seed import seed

    seed(apps)

