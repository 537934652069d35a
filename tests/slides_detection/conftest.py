"""The detector tests are pure (no Django, no database).

The repository-wide ``tests/conftest.py`` has autouse fixtures that need
Django (pytest-django's ``settings``, the cache).  They are overridden here by
no-op fixtures of the same name so these tests also run with
``-p no:django`` and never touch Django.  If a new autouse fixture that needs
Django is added to ``tests/conftest.py``, add its name here too.
"""
import pytest


@pytest.fixture(autouse=True)
def _media_root():
    yield


@pytest.fixture(autouse=True)
def _clear_cache():
    yield
