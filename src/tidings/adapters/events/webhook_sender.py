"""POSTs an app's events to its webhook URL, signed per Standard Webhooks, through one pooled
session whose resolver refuses private addresses (unless the operator allowed them)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...domain.webhooks import headers as signed_headers
from ...ports import WebhookAnswer
from ..providers.options import ProviderOptions

if TYPE_CHECKING:
    import aiohttp


class AiohttpWebhookSender:
    """aiohttp and the address guard are imported at the first event, not when the service
    starts: most apps have no webhook."""

    def __init__(self, options: ProviderOptions) -> None:
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        from ..providers.http import session
        from ..providers.ssrf import resolver_for

        if self._session is None or self._session.closed:
            self._session = session(self._options, limit=100,
                                    resolver=resolver_for(self._options.allow_private_webhooks))
        return self._session

    async def send(self, url: str, secret: str, event_id: str, body: bytes) -> WebhookAnswer:
        import aiohttp

        from ..providers.http import retry_after
        from ..providers.ssrf import literal_problem, refusal

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
