import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """Users are created per test; the production hasher costs about a second each on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
