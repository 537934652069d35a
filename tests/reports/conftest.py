import pytest

from tests.reports import factories


@pytest.fixture(scope="session")
def synthetic():
    return factories.synthetic_set()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, synthetic):
    """Two tiny ensembles trained once per session: one on the true labels, one on shuffled labels."""
    root = tmp_path_factory.mktemp("tiny-models")
    cache = root / "cache"
    good = factories.train_tiny(factories.train_items(synthetic["train"], root / "good-data"), root / "good", cache)
    bad = factories.train_tiny(factories.train_items(synthetic["train"], root / "bad-data", shuffle_seed=3),
                               root / "bad", cache)
    return {"good": good, "bad": bad}


@pytest.fixture
def cells(db, lab_admin, synthetic):
    train = factories.store_cells(synthetic["train"], split="train", user=lab_admin)
    heldout = factories.store_cells(synthetic["heldout"], split="heldout", user=lab_admin)
    return {"train": train, "heldout": heldout}


@pytest.fixture
def good_version(cells, tiny_models, lab_admin):
    return factories.register_version(tiny_models["good"], name="good", train_images=cells["train"], user=lab_admin)


@pytest.fixture
def bad_version(cells, tiny_models, lab_admin):
    return factories.register_version(tiny_models["bad"], name="bad", train_images=cells["train"], user=lab_admin)
