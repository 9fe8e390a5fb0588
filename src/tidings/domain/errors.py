"""The one error tree of Tidings.

Every failure that a caller can act on is one of these; the HTTP entrypoint maps each class to a
problem document in one place, so the service layer never speaks HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class TidingsError(Exception):
    """Base of every error the service raises on purpose."""

    title = "Error"
    kind = "error"

    def __init__(self, detail: str = "", *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []


class ValidationFailed(TidingsError):
    title = "Validation failed"
    kind = "validation"

    @classmethod
    def on(cls, field_name: str, message: str) -> ValidationFailed:
        return cls(f"{field_name}: {message}", errors=[FieldError(field_name, message)])


class BadRequest(TidingsError):
    title = "Bad request"
    kind = "bad-request"


class Unauthenticated(TidingsError):
    title = "Unauthenticated"
    kind = "unauthenticated"


class Forbidden(TidingsError):
    title = "Forbidden"
    kind = "forbidden"


class NotFound(TidingsError):
    title = "Not found"
    kind = "not-found"


class Conflict(TidingsError):
    title = "Conflict"
    kind = "conflict"


class IdempotencyMismatch(Conflict):
    title = "Idempotency key reused"
    kind = "idempotency-key-reused"


class RateLimited(TidingsError):
    title = "Too many requests"
    kind = "rate-limited"

    def __init__(self, detail: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotConfigured(TidingsError):
    """A setting, extra or provider that the operator has to provide is missing."""

    title = "Not configured"
    kind = "not-configured"


class Unavailable(TidingsError):
    """Something this request depends on cannot be reached now; the caller should try again."""

    title = "Unavailable"
    kind = "unavailable"


class StoreConflict(TidingsError):
    """A write lost a race on a uniqueness rule; the service retries or reports it."""

    title = "Conflict"
    kind = "conflict"


class IdempotencyRace(StoreConflict):
    """Another request with the same idempotency key committed first."""
