"""Fixtures of the API tests."""

from __future__ import annotations

import pytest

from tests.api_keys import api_client


@pytest.fixture(scope="module")
def client(stack):
    """The API on the end-to-end stack (its champion model and online store)."""
    with api_client(stack.settings) as c:
        yield c
