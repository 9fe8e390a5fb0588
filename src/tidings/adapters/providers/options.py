"""What every provider is built with besides an app's own settings: process-wide knobs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderOptions:
    # Requests one provider instance (one app's credentials) keeps in flight at once.
    max_concurrency: int = 64
    # Seconds for one request, connect to last byte; past it the message is retried.
    timeout: float = 15.0
    # TLS trust: None means the system's (honours SSL_CERT_FILE); tests pass their own CA.
    ssl_context: ssl.SSLContext | None = None
    # Let webhook URLs point at private, loopback or link-local addresses.
    allow_private_webhooks: bool = False
    # This service's public base URL, for provider callbacks (Twilio's StatusCallback).
    public_url: str | None = None
    user_agent: str = field(default="tidings")
