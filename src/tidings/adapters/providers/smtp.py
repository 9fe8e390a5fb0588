"""The `smtp` provider: e-mail through the app's own SMTP relay (a mail server, or a service's
SMTP submission endpoint) with aiosmtplib, over a small pool of logged-in connections.

SMTP servers count connections per client and refuse or throttle past a few (often 5 to 10), so
the pool holds at most `POOL_CAP` connections whatever `max_concurrency` says; each carries one
mail transaction at a time, and is reused for the next message rather than reconnected.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from email.errors import MessageError
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent
from ...domain.masking import mask_email
from .http import gather_bounded
from .options import ProviderOptions

log = logging.getLogger("tidings.provider.smtp")

POOL_CAP = 8
# A connection idle for longer is closed rather than reused: servers drop idle clients
# (RFC 5321 asks them to wait at least 5 minutes; many wait less).
MAX_IDLE_SECONDS = 60.0
# Refusals of our session rather than of the message (login refused, or required, or STARTTLS
# required: 530): the settings can be fixed with PUT /v1/apps/{id}, after which the message
# works, so it is retried rather than failed.
SESSION_CODES = frozenset({530, 534, 535, 538})
SETTINGS_HINT = " (check the smtp settings: username, password, starttls)"


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _reason(code: int, message: str, target: str) -> str:
    # Servers quote the recipient in their refusals; the delivery's error keeps it masked.
    text = _one_line(message).replace(target, mask_email(target))
    return f"SMTP {code}: {text}"[:300]


class SmtpProvider:
    name = "smtp"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self.host: str = config["host"]
        implicit_tls = bool(config.get("tls", False))
        self.port: int = int(config.get("port") or (465 if implicit_tls else 587))
        self._username: str | None = config.get("username") or None
        self._password: str | None = config.get("password") or None
        self._implicit_tls = implicit_tls
        self._starttls = bool(config.get("starttls", True)) and not implicit_tls
        self.sender_header: str = config["from"]
        self.envelope_from = parseaddr(self.sender_header)[1] or self.sender_header
        self.domain = self.envelope_from.rpartition("@")[2] or "localhost"
        self.max_concurrency = max(1, min(options.max_concurrency, POOL_CAP))
        self._options = options
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots: asyncio.Semaphore | None = None
        self._local_hostname: str | None = None

    # The pool -------------------------------------------------------------------------------

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, username=self._username, password=self._password,
            local_hostname=self._local_hostname, timeout=self._options.timeout,
            use_tls=self._implicit_tls, start_tls=self._starttls,
            tls_context=self._options.ssl_context)
        await client.connect()
        return client

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < MAX_IDLE_SECONDS:
                return client
            client.close()
        return None

    # Sending --------------------------------------------------------------------------------

    def build(self, m: OutboundMessage) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender_header
        msg["To"] = m.target
        msg["Subject"] = _one_line(m.title or "")
        msg["Message-ID"] = make_msgid(domain=self.domain)
        msg["Date"] = formatdate(usegmt=True)
        msg["X-Tidings-Notification"] = m.notification_id
        msg["X-Tidings-Delivery"] = m.delivery_id
        msg.set_content(m.body or "")
        if m.html:
            msg.add_alternative(m.html, subtype="html")
        return msg

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return await gather_bounded(messages, self.max_concurrency, self._send_one)

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        try:
            msg = self.build(m)
        except (ValueError, TypeError, IndexError, MessageError) as exc:
            return Failed(f"cannot build the e-mail: {type(exc).__name__}: {exc}"[:300])
        message_id = str(msg["Message-ID"]).strip("<>")
        assert self._slots is not None
        async with self._slots:
            client = self._take_idle()
            reconnected = False
            while True:
                if client is None:
                    try:
                        client = await self._connect()
                    except (aiosmtplib.SMTPException, OSError) as exc:
                        return self._connect_failure(exc, m.target, reconnected)
                # Whether the connection is left between transactions and may serve another.
                reusable = False
                try:
                    await client.send_message(msg, sender=self.envelope_from, recipients=[m.target])
                    reusable = True
                    return Sent(message_id)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    if reconnected:
                        return Retry(f"the SMTP server dropped the connection: {exc}"[:300])
                    # Most often a pooled connection the server dropped while it was idle.
                    log.info("smtp %s:%s: connection lost (%s); reconnecting once", self.host,
                             self.port, exc)
                    reconnected = True
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    reusable = True
                    refused = exc.recipients[0]
                    return self._refusal(refused.code, refused.message, m.target)
                except aiosmtplib.SMTPResponseException as exc:
                    reusable = True  # aiosmtplib sent RSET after the refusal
                    return self._refusal(exc.code, exc.message, m.target)
                except aiosmtplib.SMTPNotSupported as exc:
                    reusable = True
                    # e.g. an internationalised address and a server without SMTPUTF8.
                    return Failed(f"SMTP: {exc}"[:300])
                except ValueError as exc:
                    reusable = True  # checked before anything was sent
                    return Failed(f"SMTP: invalid address: {exc}"[:300])
                except (aiosmtplib.SMTPException, OSError) as exc:
                    return Retry(f"{type(exc).__name__}: {exc}"[:300])
                finally:
                    if reusable and client.is_connected:
                        self._idle.append((client, time.monotonic()))
                    else:
                        client.close()
                client = None

    def _connect_failure(self, exc: BaseException, target: str, reconnecting: bool) -> Retry:
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            log.warning("smtp %s:%s: login refused (%s)", self.host, self.port, exc.code)
            return Retry(_reason(exc.code, exc.message, target) + SETTINGS_HINT)
        doing = "reconnecting to" if reconnecting else "cannot connect to"
        return Retry(f"{doing} {self.host}:{self.port}: {type(exc).__name__}: {exc}"[:300])

    def _refusal(self, code: int, message: str, target: str) -> SendResult:
        reason = _reason(code, message, target)
        if code in SESSION_CODES:
            return Retry(reason + SETTINGS_HINT)
        if 500 <= code < 600:
            # A refused address is not a device: nothing is disabled, this message just fails.
            return Failed(reason)
        return Retry(reason)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(client) for client, _ in idle))

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            await asyncio.wait_for(client.quit(), timeout=min(self._options.timeout, 2.0))
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        finally:
            client.close()
