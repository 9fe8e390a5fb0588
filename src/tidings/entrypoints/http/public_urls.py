"""Whether a URL an app or user gives (a webhook, a webhook device) may be called."""

from __future__ import annotations


async def public_url_problem(url: str, allow_private: bool) -> str | None:
    """Why the URL must not be saved, or None. The address guard brings aiohttp's resolver, so
    it is imported when a URL is first checked, not when the service starts."""
    from ...adapters.providers.ssrf import check_public_url

    return await check_public_url(url, allow_private)
