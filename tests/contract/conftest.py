"""The store contract runs against every store adapter: SQLite, PostgreSQL and DynamoDB (moto
in server mode, over loopback; a fresh table per test: see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
