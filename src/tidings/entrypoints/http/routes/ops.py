"""Health, readiness and metrics for the operator's probes and scrapers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ..deps import services
from ..errors import problem
from ..jsonbody import JsonRoute
from ..render import json_response

router = APIRouter(tags=["operations"], route_class=JsonRoute)


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The store answers."""
    try:
        await services(request).store.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return problem(503, "not-ready", f"the store does not answer: {type(exc).__name__}")
    return json_response({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics_registry),
                    media_type=CONTENT_TYPE_LATEST)
