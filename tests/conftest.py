"""Shared fixtures: the fake Hub (tests/fake_hub.py) and a fresh Accelerate state for in-process training runs.
Shared constants and helpers live in tests/helpers.py."""

import pytest

from demo_fixtures import demo_folders, demo_servers  # noqa: F401
from fake_hub import fake_hub  # noqa: F401
from helpers import reset_accelerate


@pytest.fixture
def fresh_accelerate():
    """In-process training runs each start from a fresh Accelerate state."""
    reset_accelerate()
    yield
    reset_accelerate()
