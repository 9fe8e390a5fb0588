"""Typed access to what the app holds for the routes."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from ...bootstrap import Container


def services(request: Request) -> Container:
    return cast(Container, request.app.state.container)
