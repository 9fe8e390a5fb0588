"""Keeps webhook requests off private networks (server-side request forgery).

A URL that an app gives us is checked twice: when it is saved (`check_public_url`, so the app
hears at once), and at every connection, where `PublicOnlyResolver` drops the private addresses
a name resolves to. The second check is the one that holds: a name may resolve to a public
address when saved and to 169.254.169.254 a minute later (DNS rebinding), and the connection
only ever uses what the resolver returned. aiohttp does not ask the resolver about a literal IP
host, so a sender also calls `literal_problem` on each URL before sending.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Saving a URL should not hang on a slow name server; the connect-time check still applies.
RESOLVE_TIMEOUT = 2.0


class PrivateAddressError(OSError):
    """A webhook target that is, or resolves only to, a private address. An OSError so that
    aiohttp carries it out of the connector (as the `os_error` of a ClientConnectorError)."""

    def __init__(self, host: str, literal: bool = False) -> None:
        self.host = host
        what = "is" if literal else "resolves to"
        super().__init__(f"refused: {host} {what} a private address")


def _parse(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where a
    packet may really end up."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress | str) -> bool:
    """False for private, loopback, link-local (cloud metadata at 169.254.169.254 included),
    multicast, reserved, unspecified, shared (CGNAT 100.64/10), unique-local (fc00::/7) and
    anything else not globally routable, and for an IPv6 address whose embedded IPv4 is one."""
    address = _parse(ip) if isinstance(ip, str) else ip
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    if (address.is_private or address.is_loopback or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            or not address.is_global):
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address not in _CGNAT
    if address in _UNIQUE_LOCAL or address.is_site_local:
        return False
    inner = _embedded_ipv4(address)
    return inner is None or is_public(inner)


def literal_problem(url: str | URL) -> str | None:
    """Why a URL whose host is an IP literal must not be called; None when its host is a name
    (the resolver decides) or a public address."""
    try:
        host = URL(url).host if isinstance(url, str) else url.host
    except ValueError:
        return "not a valid URL"
    if not host:
        return "the URL has no host"
    address = _parse(host)
    if address is None or is_public(address):
        return None
    return str(PrivateAddressError(host, literal=True))


def refusal(exc: BaseException) -> str | None:
    """The reason, when an exception out of an aiohttp request is this guard's refusal."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PrivateAddressError):
            return str(current)
        if isinstance(current, aiohttp.ClientConnectorError):
            current = current.os_error
            continue
        current = current.__cause__ or current.__context__
    return None


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver with every non-public address taken out of the answer; a name left
    with none raises PrivateAddressError. Give it to the TCPConnector of every session that
    calls URLs an app chose."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        literal = _parse(host)
        if literal is not None and not is_public(literal):
            raise PrivateAddressError(host, literal=True)
        answers = await self._inner.resolve(host, port, family)
        public = [a for a in answers if is_public(a["host"])]
        if not public:
            raise PrivateAddressError(host)
        return public

    async def close(self) -> None:
        await self._inner.close()


def resolver_for(allow_private: bool) -> PublicOnlyResolver | None:
    """The resolver a session for app-chosen URLs uses: None (aiohttp's own) when private
    targets are allowed by configuration."""
    return None if allow_private else PublicOnlyResolver()


async def check_public_url(url: str, allow_private: bool,
                           resolver: AbstractResolver | None = None) -> str | None:
    """Why an app may not save this webhook URL, or None. Refuses other schemes than http(s),
    private IP literals, and names that resolve to any private address. A name that does not
    resolve (yet) is accepted: it is checked again at every connection."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "not a valid URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "must be an http:// or https:// URL with a host"
    if allow_private:
        return None
    host = parsed.host
    address = _parse(host)
    if address is not None:
        return None if is_public(address) else str(PrivateAddressError(host, literal=True))
    own = resolver is None
    names = resolver or aiohttp.DefaultResolver()
    try:
        answers: list[Any] = await asyncio.wait_for(
            names.resolve(host, parsed.port or 0, socket.AF_UNSPEC), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if own:
            await names.close()
    if any(not is_public(a["host"]) for a in answers):
        return str(PrivateAddressError(host))
    return None
