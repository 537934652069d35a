"""Slide fixtures: a tiny ensemble trained once per session on every demo class (random weights,
so no download), registered as the active model version of each test's database."""
import hashlib

import pytest

from classifier.ml.api import TrainItem, train
from tests.factories import TrainedModelVersionFactory
from tests.helpers import DEMO_CELLS


@pytest.fixture(scope="session")
def slides_checkpoint(tmp_path_factory):
    items = []
    for folder in sorted(p for p in DEMO_CELLS.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir())[:6]:
            items.append(TrainItem(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), label=folder.name))
    base = tmp_path_factory.mktemp("tiny-model")
    result = train(items, classes=sorted({i.label for i in items}), ensemble=["efficientnet_lite0"], mode="frozen",
                   weights=None, epochs=2, cache_dir=base / "cache", out_dir=base / "out", device="cpu",
                   config_overrides={"input_size": 64})
    return result


@pytest.fixture
def slides_model(db, slides_checkpoint):
    """``slides_checkpoint`` registered as the active model version."""
    return TrainedModelVersionFactory(result=slides_checkpoint, activate=True)
