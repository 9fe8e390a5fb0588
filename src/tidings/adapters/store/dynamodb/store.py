"""The Store port on DynamoDB: units of work over one table (see unit.py, docs/dynamodb.md)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from . import journal
from .apps import DynamoApps, DynamoKeys
from .broadcasts import DynamoBroadcasts
from .devices import DynamoDevices
from .events import DynamoEvents
from .idempotency import DynamoIdempotency
from .notifications import DynamoNotifications
from .preferences import DynamoPreferences
from .queue import DynamoQueue
from .stream import DynamoStream
from .table import Table, parse_url
from .topics import DynamoTopics
from .unit import Unit
from .users import DynamoUsers

log = logging.getLogger("tidings.store.dynamodb")


class DynamoTx:
    """The repositories of one unit of work."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.apps = DynamoApps(unit)
        self.keys = DynamoKeys(unit)
        self.users = DynamoUsers(unit)
        self.devices = DynamoDevices(unit)
        self.notifications = DynamoNotifications(unit)
        self.deliveries = DynamoQueue(unit)
        self.idempotency = DynamoIdempotency(unit)
        self.events = DynamoEvents(unit)
        self.stream = DynamoStream(unit)
        self.preferences = DynamoPreferences(unit)
        self.topics = DynamoTopics(unit)
        self.broadcasts = DynamoBroadcasts(unit)


class DynamoStore:
    # Concurrent sends committed as one unit (the service's group commit). On DynamoDB a
    # unit gains nothing from more (it is cut into transactions of 100 writes anyway), and
    # each request's idempotency record commits in the unit's first transaction.
    group_commit_limit = 32

    def __init__(self, url: str, *, pool_size: int = 10, client: Any = None,
                 create_table: bool = False, stream: bool = True, **_: Any) -> None:
        """`create_table`: make the table on `migrate` when missing (DynamoDB Local, tests),
        with a stream unless `stream` is False; on AWS the SAM template makes it and `migrate`
        only checks its layout."""
        self.url = url
        # Connections are opened as needed: the cap only bounds a burst (the pieces of a large
        # unit, the API Gateway hub's reads, which borrow this client).
        self.table = Table(parse_url(url), client, max_connections=max(64, pool_size))
        self._create = create_table or self.table.location.endpoint_url is not None
        self._stream = stream

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DynamoTx]:
        unit = Unit(self.table, writable=True)
        yield DynamoTx(unit)
        await unit.commit()

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[DynamoTx]:
        yield DynamoTx(Unit(self.table, writable=False))

    async def migrate(self) -> None:
        if self._create:
            await self.table.create(stream=self._stream)
        await self.table.check()

    async def ping(self) -> None:
        await self.table.check()

    async def recover(self) -> int:
        """Finish the large units whose writer died midway (journal.py); a housekeeping chore
        of the worker and the AWS scheduler."""
        finished = await journal.recover(self.table)
        if finished:
            log.warning("finished %d large unit(s) of work that their writer left midway", finished)
        return finished

    async def close(self) -> None:
        await self.table.close()
