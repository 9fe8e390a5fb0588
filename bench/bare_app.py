"""The baseline of bench/api.py: a bare FastAPI app on the same server stack as `tidings serve`
(uvicorn, httptools), with no store, no auth and no middleware.

    python -m uvicorn --app-dir bench bare_app:app --port 8090

POST /v1/notifications parses the same JSON body with a small pydantic model and answers 202.
GET /v1/users/{user_id}/notifications answers a fixed inbox page: the JSON document in the file
named by BENCH_INBOX_PAGE (bench/api.py saves a real page of the tidings server there), or else
a made-up page of 50 notifications shaped like Tidings' own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.responses import Response


class To(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)


class Send(BaseModel):
    to: To
    channels: list[Literal["push", "in_app", "sms", "email"]] | None = None
    title: str | None = Field(None, max_length=1024)
    body: str | None = Field(None, max_length=16 * 1024)


def _made_up_page() -> dict[str, Any]:
    def delivery(i: int, channel: str) -> dict[str, Any]:
        return {"id": f"01JBENCHDELIVERY{i:010d}", "channel": channel,
                "provider": "log" if channel == "push" else "inbox",
                "target": f"01JBENCHDEVICE{i:012d}", "status": "sent", "attempts": 1,
                "error": None, "provider_message_id": f"01JBENCHMESSAGE{i:011d}",
                "updated_at": "2025-01-01T00:00:00.000Z"}

    items = [{"id": f"01JBENCHNOTIFICATION{i:06d}", "user_id": "u1", "to": {"user_id": "u1"},
              "channels": ["push", "in_app"], "title": "Your order has shipped",
              "body": "Arriving Tuesday", "data": {}, "category": None,
              "created_at": "2025-01-01T00:00:00.000Z", "send_at": None, "status": "sent",
              "read_at": None, "sender_id": None, "ttl": None, "priority": "normal",
              "deliveries": [delivery(3 * i, "push"), delivery(3 * i + 1, "push"),
                             delivery(3 * i + 2, "in_app")]}
             for i in range(50)]
    return {"items": items, "next_cursor": "MDFKQkVOQ0hOT1RJRklDQVRJT04wMDAwNDk",
            "unread_count": 50}


_page_file = os.environ.get("BENCH_INBOX_PAGE")
PAGE: dict[str, Any] = (orjson.loads(Path(_page_file).read_bytes()) if _page_file
                        else _made_up_page())
_ACCEPTED = orjson.dumps({"items": [{"id": "01JBENCHNOTIFICATION000000", "status": "queued"}]})

app = FastAPI()


@app.post("/v1/notifications", status_code=202)
async def send(body: Send) -> Response:
    return Response(_ACCEPTED, status_code=202, media_type="application/json")


@app.get("/v1/users/{user_id}/notifications")
async def inbox(user_id: str, limit: int = 50) -> Response:
    # Serialised on every request, as Tidings does with its page.
    return Response(orjson.dumps(PAGE), media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
