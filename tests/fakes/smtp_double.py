"""A real SMTP server for the `smtp` provider's tests: aiosmtpd's protocol (EHLO, AUTH PLAIN and
LOGIN, STARTTLS, implicit TLS) on 127.0.0.1 port 0, in the test's own event loop.

aiosmtpd's threaded `Controller` cannot listen on port 0 (its readiness probe connects to the
configured port), so the double starts aiosmtpd's `SMTP` protocol with `loop.create_server`.
It keeps every accepted envelope with its parsed message, counts connections and logins, and
answers what a test scripts for a recipient: a 550 or 451 at RCPT, a 452 at DATA, or a dropped
connection. TLS uses the certificate of `tests.fakes.tls`, which clients must trust explicitly.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.loopback import Loopback, take
from tests.fakes.tls import loopback_tls


def _abort(server: SMTP) -> None:
    """Drop the connection without a word, as a crashing or overloaded server does."""
    transport = server.transport
    assert isinstance(transport, asyncio.Transport)
    transport.abort()


# --- the server ---------------------------------------------------------------------------------

# What a scripted recipient gets.
REFUSE_550 = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
DEFER_451 = "451 4.3.0 <{rcpt}>: Temporary lookup failure"
DATA_452 = "452 4.3.1 Insufficient system storage"
DROP = "drop"  # close the connection at RCPT without answering


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    peer: Any
    tls: bool
    login: str | None


@dataclass
class _Script:
    answer: str
    at: str  # "RCPT" or "DATA"
    times: int | None  # None: every time


class _Protocol(SMTP):
    """aiosmtpd's server, with the connection count the double reports."""

    def __init__(self, double: SmtpDouble, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            # Deliberate: AUTH over implicit TLS (which aiosmtpd cannot tell), or in the clear
            # to see that the client offers it nonetheless.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            super().__init__(*args, **kwargs)
        self._double = double

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting = self.transport is None
        super().connection_made(transport)
        if starting:  # not the STARTTLS upgrade of a connection already counted
            self._double.connections += 1
            self._double.live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._double.live.discard(self)
        super().connection_lost(error)


@dataclass
class SmtpDouble(Loopback):
    """`credentials` makes AUTH mandatory; `starttls` offers STARTTLS and requires it before
    MAIL; `implicit_tls` serves TLS from the first byte (SMTPS, port 465 style)."""

    credentials: tuple[str, str] | None = None
    starttls: bool = False
    implicit_tls: bool = False
    hostname: str = "mx.double.test"
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    logins: list[str] = field(default_factory=list)
    failed_logins: int = 0
    live: set[_Protocol] = field(default_factory=set)
    _scripts: dict[str, list[_Script]] = field(default_factory=dict)
    _drop_at_mail: int = 0
    _server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> SmtpDouble:
        tls = loopback_tls()
        kwargs: dict[str, Any] = {"hostname": self.hostname, "enable_SMTPUTF8": True,
                                  "decode_data": False}
        if self.starttls:
            kwargs.update(tls_context=tls.server_context(alpn=()), require_starttls=True)
        if self.credentials is not None:
            kwargs.update(auth_required=True, authenticator=self._authenticate,
                          # AUTH in the clear is refused where STARTTLS is on offer, as
                          # servers do (aiosmtpd does not count implicit TLS as TLS here).
                          auth_require_tls=self.starttls)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Protocol(self, self, **kwargs), "127.0.0.1", 0,
            ssl=tls.server_context(alpn=()) if self.implicit_tls else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # --- what the tests use ------------------------------------------------------------------

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The app's `smtp` provider settings for this server."""
        config: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "starttls": self.starttls,
                                  "tls": self.implicit_tls, "from": "Acme <no-reply@acme.test>"}
        if self.credentials is not None:
            config["username"], config["password"] = self.credentials
        config.update(extra)
        return config

    def script(self, rcpt: str, answer: str, *, at: str = "RCPT", times: int | None = None) -> None:
        """Answer `answer` (a status line, `{rcpt}` filled in, or DROP) to `rcpt` at RCPT or DATA,
        `times` times (None: until told otherwise)."""
        self._scripts.setdefault(rcpt.lower(), []).append(_Script(answer, at, times))

    def drop_at_mail(self, times: int = 1) -> None:
        """Close the connection at the next `times` MAIL commands, as a server does that timed a
        connection out while the client held it idle."""
        self._drop_at_mail += times

    def drop_all(self) -> None:
        """Close every open connection, as a server does with idle clients."""
        for proto in list(self.live):
            if proto.transport is not None:
                proto.transport.close()

    def to(self, rcpt: str) -> list[Received]:
        return [r for r in self.received if rcpt in r.rcpt_tos]

    # --- aiosmtpd hooks ------------------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            self.failed_logins += 1
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        if self.credentials is not None and (login, password) == self.credentials:
            self.logins.append(login)
            return AuthResult(success=True, auth_data=login)
        self.failed_logins += 1
        return AuthResult(success=False, handled=False)

    async def _answer(self, server: SMTP, rcpt: str, at: str) -> str | None:
        script = take(self._scripts.get(rcpt.lower()), lambda s: s.at == at)
        answer = None if script is None else script.answer.format(rcpt=rcpt)
        if answer == DROP:
            _abort(server)
            return "421 4.4.2 closing"  # never reaches the client: the connection is gone
        return answer

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self._drop_at_mail > 0:
            self._drop_at_mail -= 1
            _abort(server)
            return "421 4.4.2 closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        answer = await self._answer(server, address, "RCPT")
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            answer = await self._answer(server, rcpt, "DATA")
            if answer is not None:
                return answer
        raw = envelope.original_content or b""
        # Stored the way a mail server stores it: with the wire's CRLFs as plain line ends.
        message = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        self.received.append(Received(
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos), raw=raw,
            message=message, peer=session.peer, tls=session.ssl is not None or self.implicit_tls,
            login=login))
        return "250 2.0.0 Ok: queued"
