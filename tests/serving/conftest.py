"""Fixtures of the API tests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app


@pytest.fixture(scope="module")
def client(stack):
    """The API on the end-to-end stack (its champion model and online store)."""
    with TestClient(create_app(stack.settings)) as c:
        yield c
