"""Fixtures for the pure ML tests: synthetic cell images, one small ensemble per session."""

import pytest

from .cells import CLASSES, TINY, TINY_ENSEMBLE, make_images

def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")

@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to a busy shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("cells"), per_class=10)

@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory):
    """One small ensemble trained once for the whole session (random-init backbones)."""
    from classifier.ml.api import train

    base = tmp_path_factory.mktemp("train")
    events = []
    result = train(dataset, classes=CLASSES, ensemble=TINY_ENSEMBLE, mode="default", epochs=40,
                   cache_dir=base / "cache", out_dir=base / "out", device="cpu", weights=None, seed=0,
                   progress=events.append, config_overrides=TINY)
    return result, events, base
