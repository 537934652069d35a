import shutil

import pytest

from . import scenarios
from .stack import Stack


@pytest.fixture(scope="session")
def fault_stack():
    """One private PostgreSQL + Redis + Celery worker + gunicorn for all fault tests, with a tiny
    active model and API users. Never the machine's shared services: these get killed."""
    for tool in ("redis-server",):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed for the fault tests (`make services` installs it).")
    stack = Stack().start()
    try:
        scenarios.prepare(stack, prefix="fault")
        yield stack
    finally:
        stack.close()
