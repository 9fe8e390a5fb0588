"""The hub of the AWS mode: API Gateway's WebSocket API holds the streams, and whoever commits
an event (the API function, the worker) posts it to the user's connections itself.

No process holds a connection here, so nothing subscribes: a client connects to the WebSocket
API, whose `$connect` route records the connection in the table (`connections.Connections`),
and `publish` sends each event to every live connection of its user through the Management
API's PostToConnection, as the two text documents a node's WebSocket sends: the event, then the
unread counts under the same id. The frames of one connection go one after the other, in the
events' order; connections are served concurrently, a bounded number at a time.

A connection that API Gateway says is gone (410 GoneException: the client left without a
`$disconnect` we saw) is forgotten. Any other failure is logged and costs that connection its
frames of this publish, never the other connections theirs: streams are best effort, and a
client that sees a gap in the ids reads what it missed from the inbox.

A kick closes the matching connections with DeleteConnection and forgets them, whether or not
API Gateway could be told: a connection without its items receives nothing more. API Gateway
closes the socket with a code of its own; the kick's code cannot reach the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from ...domain.errors import NotConfigured, Unavailable
from ...domain.masking import mask_token
from ...domain.stream import RESYNC, Kick, StreamEvent, event_doc, unread_doc
from ...ports import HubSubscription
from ..aws_client import LazyClient
from .connections import Connections, parse_table_url
from .memory import Deliver, call_on_kick

log = logging.getLogger("tidings.hub")

T = TypeVar("T")

POSTS = 64  # connections posted to at once
QUERIES = 16  # users whose connections are read at once
_REGION = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


def frames_of(events: Sequence[StreamEvent]) -> list[bytes]:
    """What one user's connections receive for `events`, rendered once for all of them."""
    out = []
    for ev in events:
        out.append(orjson.dumps(event_doc(ev)))
        out.append(orjson.dumps(unread_doc(ev.seq, ev.unread_in_app, ev.unread)))
    return out


def is_gone(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(exc.response.get("Error", {}).get("Code") == "GoneException" or status == 410)


def _reason(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code') or '?'}: {error.get('Message') or ''}".rstrip(": ")[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


async def _each(items: Sequence[T], limit: int, one: Callable[[T], Awaitable[None]]) -> None:
    """`one` for every item, at most `limit` at a time (`one` handles its own failures)."""
    queue = iter(items)

    async def lane() -> None:
        for item in queue:
            await one(item)

    await asyncio.gather(*(lane() for _ in range(min(limit, len(items)))))


class ApiGatewayHub:
    """`endpoint`: the Management API of the WebSocket API, `https://{api-id}.execute-api.
    {region}.amazonaws.com/{stage}` (TIDINGS_WEBSOCKET_ENDPOINT). `table`, `region`,
    `endpoint_url`: the service's DynamoDB table (from `dynamodb://<table>?region=…
    &endpoint_url=…`, see `from_urls`). Clients are built at first use from these, with the
    default credentials, unless given: `dynamodb_client` and `management_client` stay their
    owner's to close, and `borrow_dynamodb` gets the client of the store (one DynamoDB client
    and connection pool a process; `timeout` then applies to the Management API only)."""

    def __init__(self, endpoint: str, table: str, region: str, endpoint_url: str | None = None,
                 *, dynamodb_client: Any = None, management_client: Any = None,
                 borrow_dynamodb: Callable[[], Awaitable[Any]] | None = None,
                 concurrency: int = POSTS, timeout: float = 10.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise NotConfigured(
                f"the WebSocket Management API endpoint must be https://{{api-id}}.execute-api."
                f"{{region}}.amazonaws.com/{{stage}}, not {endpoint!r} (clients connect to the "
                "wss:// URL; the service posts to the https:// one)")
        if concurrency < 1:
            raise NotConfigured("the hub's concurrency must be at least 1")
        named = _REGION.search(parts.hostname or "")
        self._concurrency = concurrency
        self.connections = Connections(table, region, endpoint_url, client=dynamodb_client,
                                       borrow=borrow_dynamodb, timeout=timeout)
        self._management = LazyClient(
            "apigatewaymanagementapi", named.group(1) if named else region,
            endpoint.rstrip("/"), client=management_client, pool=concurrency,
            connect_timeout=timeout, read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": 2})
        self._on_kick: Callable[[Kick], None] | None = None

    @classmethod
    def from_urls(cls, websocket_endpoint: str, database_url: str, **options: Any) -> ApiGatewayHub:
        """From the settings' TIDINGS_WEBSOCKET_ENDPOINT and TIDINGS_DATABASE_URL."""
        table, region, endpoint_url = parse_table_url(database_url)
        return cls(websocket_endpoint, table, region, endpoint_url, **options)

    # -- the Hub port -------------------------------------------------------------------
    async def start(self, on_kick: Callable[[Kick], None]) -> None:
        self._on_kick = on_kick

    async def publish(self, events: Sequence[StreamEvent]) -> None:
        by_user: dict[tuple[str, str], list[StreamEvent]] = {}
        for ev in events:
            if ev.type != RESYNC:  # a hub's word to its subscribers, never a client's
                by_user.setdefault((ev.app_id, ev.user_id), []).append(ev)
        if not by_user:
            return
        client = await self._management.get()
        posting = asyncio.Semaphore(self._concurrency)

        async def to_user(key: tuple[str, str]) -> None:
            app_id, user_id = key
            try:
                connection_ids = await self.connections.of_user(app_id, user_id)
            except Exception as exc:  # noqa: BLE001 -- one user's failure is not the others'
                log.warning("could not read the WebSocket connections of %s/%s: %s",
                            app_id, mask_token(user_id), _reason(exc))
                return
            if connection_ids:
                frames = frames_of(by_user[key])
                await asyncio.gather(*(self._post(client, posting, app_id, user_id, c, frames)
                                       for c in connection_ids))

        await _each(list(by_user), QUERIES, to_user)

    async def subscribe(self, app_id: str, user_id: str, deliver: Deliver) -> HubSubscription:
        raise NotConfigured(
            "in the AWS mode streams go through API Gateway's WebSocket API, which records its "
            "connections in the table and receives events by the Management API; no process "
            "holds a stream, so none subscribes to the hub (serve streams from a node with "
            "the memory or Redis hub)")

    async def unsubscribe(self, subscription: HubSubscription) -> None:
        return None  # nothing ever subscribed

    async def kick(self, kick: Kick) -> None:
        """Closes the matching connections. Raises Unavailable when they cannot be read."""
        if self._on_kick is not None:
            call_on_kick(self._on_kick, kick)
        app_id = kick.app_id
        if app_id is None:
            # Every kick the service sends names its app; finding every app's connections
            # would take a Scan of the whole table.
            log.warning("a kick that names no app cannot close WebSocket API connections: %s",
                        kick.reason)
            return
        try:
            if kick.user_id is not None:
                targets = [(kick.user_id, c) for c in await self.connections.of_user(
                    app_id, kick.user_id, key_id=kick.key_id)]
            else:
                targets = await self.connections.of_app(app_id, key_id=kick.key_id)
        except Exception as exc:
            raise Unavailable(f"could not read the WebSocket connections to close: "
                              f"{_reason(exc)}") from exc
        if not targets:
            return
        client = await self._management.get()

        async def close_one(target: tuple[str, str]) -> None:
            user_id, connection_id = target
            try:
                await client.delete_connection(ConnectionId=connection_id)
            except Exception as exc:  # noqa: BLE001 -- it is forgotten all the same
                if not is_gone(exc):
                    log.warning("could not close WebSocket connection %s of %s/%s (%s): %s",
                                mask_token(connection_id), app_id, mask_token(user_id),
                                kick.reason, _reason(exc))
            await self._forget(app_id, user_id, connection_id)

        await _each(targets, self._concurrency, close_one)

    async def close(self) -> None:
        await self._management.close()
        await self.connections.close()

    # -- one connection ------------------------------------------------------------------
    async def _post(self, client: Any, posting: asyncio.Semaphore, app_id: str, user_id: str,
                    connection_id: str, frames: list[bytes]) -> None:
        """The frames in order; a refused frame is skipped, a connection that is gone or cannot
        be reached gets no more of them."""
        from botocore.exceptions import ClientError

        async with posting:
            for data in frames:
                try:
                    await client.post_to_connection(ConnectionId=connection_id, Data=data)
                except Exception as exc:  # noqa: BLE001 -- never another connection's problem
                    if is_gone(exc):
                        await self._forget(app_id, user_id, connection_id)
                        return
                    log.warning("posting to WebSocket connection %s of %s/%s failed: %s",
                                mask_token(connection_id), app_id, mask_token(user_id),
                                _reason(exc))
                    if not isinstance(exc, ClientError):  # no answer: do not wait for each frame
                        return

    async def _forget(self, app_id: str, user_id: str, connection_id: str) -> None:
        try:
            await self.connections.discard(app_id, user_id, connection_id)
        except Exception as exc:  # noqa: BLE001 -- its ttl removes it in the end
            log.warning("could not forget WebSocket connection %s of %s/%s: %s",
                        mask_token(connection_id), app_id, mask_token(user_id), _reason(exc))
