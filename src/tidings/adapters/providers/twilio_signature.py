"""Twilio's request signature (`X-Twilio-Signature`): how Twilio proves that a callback it
POSTs (a message status, say) comes from the account that holds the auth token.

The signed text is the full URL Twilio called (scheme, host, path and query), followed by every
POST parameter sorted by name, each as its name and value run together; the signature is the
base64 of its HMAC-SHA1 under the auth token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    text = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> set[str]:
    """The URL as given, without its scheme's default port and with it: Twilio's own libraries
    accept either, because the port Twilio signs depends on how the callback URL was written."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    variants = {url}
    if default is None or not parts.hostname:
        return variants
    host = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    bare = host.rsplit(":", 1)[0] if parts.port is not None else host
    if parts.port in (None, default):
        variants.add(urlunsplit(parts._replace(netloc=f"{userinfo}{bare}")))
        variants.add(urlunsplit(parts._replace(netloc=f"{userinfo}{bare}:{default}")))
    return variants


def valid_twilio_signature(auth_token: str, url: str, params: Mapping[str, str],
                           header: str | None) -> bool:
    """Whether `header` is Twilio's signature of this request; compared in constant time."""
    if not header or not auth_token:
        return False
    given = header.strip().encode()
    found = False
    for candidate in _port_variants(url):
        # Every variant is compared, so the time taken does not tell which one matched.
        found |= hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), given)
    return found
