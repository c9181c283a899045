"""Shared fixtures: settings rooted in a temporary folder, small contract-shaped tables."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from leadscore.contracts import LEADS
from leadscore.settings import PathsSettings, Settings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings whose every path lives under the given folder."""

    def build(root: Path, **sections: Any) -> Settings:
        return Settings(paths=PathsSettings(root=root), **sections)

    return build


def make_leads(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A leads table with every contract column; unspecified optional columns are missing."""
    frame = pd.DataFrame([{c: row.get(c) for c in LEADS.column_names} for row in rows])
    frame["lead_id"] = frame["lead_id"].astype("int64")
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    return frame


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real stack on small demo data, built once per test session."""
    from tests.stack import build_stack

    return build_stack(tmp_path_factory.mktemp("stack"))
