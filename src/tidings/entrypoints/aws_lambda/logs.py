"""Log lines as one JSON object each, on stdout, tagged with the invocation's request id.

CloudWatch Logs keeps whatever a function prints; one JSON object per line is what Logs
Insights can filter by field (`request_id`, `level`, `logger`) without a parse pattern, and the
request id ties every line to the invocation that wrote it, also when the event loop runs
several tasks of one invocation at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_request_id: ContextVar[str | None] = ContextVar("tidings_request_id", default=None)
_function: ContextVar[str | None] = ContextVar("tidings_function", default=None)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, function = _request_id.get(), _function.get()
        if request_id is not None:
            doc["request_id"] = request_id
        if function is not None:
            doc["function"] = function
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def install(level: str | int = logging.INFO) -> None:
    """Make the root logger write JSON lines to stdout, replacing the handlers it had (the
    Lambda runtime's own would print every line a second time, in its text format)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def tagged(function: str, request_id: str | None) -> Iterator[None]:
    """Every line logged inside (and in tasks started inside) names this invocation."""
    tokens = (_function.set(function), _request_id.set(request_id))
    try:
        yield
    finally:
        _request_id.reset(tokens[1])
        _function.reset(tokens[0])
