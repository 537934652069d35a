import pytest

from tests.factories import ModelVersionFactory


@pytest.fixture
def active_model_row(db):
    """An active ModelVersion row with no checkpoint behind it (for tests of what the pages show of its
    predictions); ``active_model`` in tests/conftest.py is a real, loadable tiny ensemble."""
    return ModelVersionFactory(status="active", classes=["lymphocyte", "monocyte"], backbones=["efficientnet_lite0"])
