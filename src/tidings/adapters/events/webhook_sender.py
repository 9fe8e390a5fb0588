"""POSTs an app's events to its webhook URL, signed per Standard Webhooks, through one pooled
session whose resolver refuses private addresses (unless the operator allowed them)."""

from __future__ import annotations

import time

import aiohttp

from ...domain.webhooks import headers as signed_headers
from ...ports import WebhookAnswer
from ..providers.http import retry_after, session
from ..providers.options import ProviderOptions
from ..providers.ssrf import literal_problem, refusal, resolver_for


class AiohttpWebhookSender:
    def __init__(self, options: ProviderOptions) -> None:
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = session(self._options, limit=100,
                                    resolver=resolver_for(self._options.allow_private_webhooks))
        return self._session

    async def send(self, url: str, secret: str, event_id: str, body: bytes) -> WebhookAnswer:
        if not self._options.allow_private_webhooks:
            problem = literal_problem(url)
            if problem:
                return WebhookAnswer(False, f"refused: {problem}")
        heads = signed_headers(secret, event_id, int(time.time()), body)
        heads["Content-Type"] = "application/json"
        try:
            async with self._client().post(url, data=body, headers=heads,
                                           allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return WebhookAnswer(True)
                return WebhookAnswer(False, f"HTTP {resp.status}",
                                     retry_after(resp.headers.get("Retry-After")))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            reason = refusal(exc)
            return WebhookAnswer(False, f"refused: {reason}" if reason
                                 else f"{type(exc).__name__}: {exc}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
