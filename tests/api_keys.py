"""API keys for the tests that call the API: an admin key in the settings' key database."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from leadscore.auth import ADMIN, ApiKeyStore
from leadscore.settings import Settings
from serving.app import create_app


def key_headers(settings: Settings, *scopes: str, name: str = "tests") -> dict[str, str]:
    """``Authorization`` header of a new key with the scopes (default: admin)."""
    key, _ = ApiKeyStore(settings.auth_db_url).create(name, scopes or (ADMIN,))
    return {"authorization": f"Bearer {key}"}


def api_client(settings: Settings, **app_options: Any) -> TestClient:
    """A TestClient of ``create_app(settings, ...)`` sending an admin key with every request."""
    return TestClient(create_app(settings, **app_options), headers=key_headers(settings))
