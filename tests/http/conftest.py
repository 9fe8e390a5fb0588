"""The HTTP API is the same in every mode: these tests run on SQLite, PostgreSQL and DynamoDB."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
