"""Every failure as an RFC 9457 problem document, mapped in this one place."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ...domain import errors as e

log = logging.getLogger("tidings.http")

PROBLEM_JSON = "application/problem+json"

STATUS: list[tuple[type[e.TidingsError], int]] = [
    (e.ValidationFailed, 422),
    (e.BadRequest, 400),
    (e.Unauthenticated, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.StoreConflict, 409),
    (e.RateLimited, 429),
    (e.NotConfigured, 503),
    (e.Unavailable, 503),
]
_TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 406: "Not acceptable", 409: "Conflict",
           413: "Payload too large", 415: "Unsupported media type", 422: "Validation failed",
           429: "Too many requests", 500: "Internal error", 503: "Unavailable"}


def problem(status: int, kind: str, detail: str, *, title: str | None = None,
            errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": f"urn:tidings:problem:{kind}",
                            "title": title or _TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON,
                    headers=headers)


def _status_of(exc: e.TidingsError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def from_error(exc: e.TidingsError) -> Response:
    status = _status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tidings"'
    if isinstance(exc, e.RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return problem(status, exc.kind, exc.detail, title=exc.title,
                   errors=[{"field": f.field, "message": f.message} for f in exc.errors],
                   headers=headers)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "datetime", "date",
                        "none", "union", "nullable", "default"})


def _is_type_tag(part: str) -> bool:
    """Pydantic names union members and wrappers in error locations (`constrained-str`,
    `function-after[...]`, `LocalTime`); our field names never look like that."""
    return (part[:1].isupper() or "[" in part or "-" in part or part in _TYPE_TAGS)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        kind, parts = parts[0], parts[1:]
        if kind == "header" and parts:
            return parts[0]
    parts = [p for p in parts if not _is_type_tag(p)]
    # `$` is the request body as a whole (JSONPath's root), not its `body` field.
    return ".".join(parts) or "$"


def from_validation(exc: RequestValidationError) -> Response:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error")
            return problem(400, "json-invalid",
                           f"the body is not valid JSON: {reason}" if reason else
                           "the body is not valid JSON")
    fields = []
    for err in errors:
        message = str(err.get("msg", "is invalid"))
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        fields.append({"field": _field(tuple(err.get("loc", ()))), "message": message})
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return problem(422, "validation", detail, errors=fields)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.TidingsError)
    async def _tidings(_: Request, exc: e.TidingsError) -> Response:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return from_validation(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(status, "Error")
        kind = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large",
                415: "unsupported-media-type"}.get(status, "http-error")
        return problem(status, kind, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "an internal error occurred; it has been logged")
