"""The one table: its name, its client, its layout (created here when it does not exist, as
for DynamoDB Local or a test; on AWS the SAM template creates it) and the reads every
repository shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ....domain.errors import NotConfigured
from ...aws_client import LazyClient
from .codec import Item

INDEXES = ("gsi1", "gsi2")
BATCH_WRITE = 25  # what BatchWriteItem takes at once
TTL_ATTRIBUTE = "ttl"


@dataclass(frozen=True)
class Location:
    table: str
    region: str | None
    endpoint_url: str | None


def parse_url(url: str) -> Location:
    """`dynamodb://<table>?region=eu-west-1[&endpoint_url=http://127.0.0.1:8000]`."""
    parts = urlsplit(url)
    if parts.scheme != "dynamodb" or not parts.netloc:
        raise NotConfigured("use dynamodb://<table>?region=<region> for the DynamoDB store")
    table = parts.netloc
    if not (3 <= len(table) <= 255) or not all(c.isalnum() or c in "_.-" for c in table):
        raise NotConfigured(f"{table!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
    query = parse_qs(parts.query)
    unknown = set(query) - {"region", "endpoint_url"}
    if unknown:
        raise NotConfigured(f"unknown DynamoDB URL option(s): {', '.join(sorted(unknown))}")
    region = query.get("region", [None])[0]
    endpoint = query.get("endpoint_url", [None])[0]
    return Location(table, region, endpoint)


class Table:
    """The client and the table name, shared by every unit of work of a store."""

    def __init__(self, location: Location, client: Any = None, *, max_connections: int = 10) -> None:
        self.location = location
        self.name = location.table
        # Adaptive retries: DynamoDB throttles a hot partition, and backing off helps it.
        self._client = LazyClient("dynamodb", location.region, location.endpoint_url,
                                  client=client, pool=max_connections, connect_timeout=3,
                                  read_timeout=30,
                                  retries={"max_attempts": 5, "mode": "adaptive"})

    async def client(self) -> Any:
        return await self._client.get()

    async def close(self) -> None:
        await self._client.close()

    async def delete_many(self, doomed: Sequence[tuple[str, str]]) -> int:
        """Delete the items at once, outside any transaction (BatchWriteItem, 25 a call,
        what it leaves unprocessed sent again after a growing pause); returns how many."""
        client = await self.client()
        unique = list(dict.fromkeys(doomed))
        for start in range(0, len(unique), BATCH_WRITE):
            request: dict[str, Any] = {self.name: [
                {"DeleteRequest": {"Key": key(pk, sk)}}
                for pk, sk in unique[start:start + BATCH_WRITE]]}
            delay = 0.02
            while request:
                answer = await client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
                if request:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return len(unique)

    # The layout ---------------------------------------------------------------------------

    async def create(self, *, stream: bool = True) -> None:
        """Create the table (and its indexes, TTL and, unless told not to, the stream that
        feeds the delivery queue on AWS) unless it exists."""
        client = await self.client()
        try:
            await client.describe_table(TableName=self.name)
            return
        except client.exceptions.ResourceNotFoundException:
            pass
        attributes = [{"AttributeName": n, "AttributeType": "S"}
                      for n in ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")]
        # Another process may create it meanwhile.
        with contextlib.suppress(client.exceptions.ResourceInUseException):
            await client.create_table(
                TableName=self.name, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=attributes,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                           {"AttributeName": "sk", "KeyType": "RANGE"}],
                GlobalSecondaryIndexes=[{
                    "IndexName": index,
                    "KeySchema": [{"AttributeName": f"{index}pk", "KeyType": "HASH"},
                                  {"AttributeName": f"{index}sk", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "ALL"}} for index in INDEXES],
                StreamSpecification=({"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
                                     if stream else {"StreamEnabled": False}))
        waiter = client.get_waiter("table_exists")
        await waiter.wait(TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        await client.update_time_to_live(
            TableName=self.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})

    async def check(self) -> None:
        """Make sure the table has the layout this code needs (the template creates it)."""
        client = await self.client()
        try:
            described = (await client.describe_table(TableName=self.name))["Table"]
        except client.exceptions.ResourceNotFoundException as exc:
            raise NotConfigured(f"the DynamoDB table {self.name!r} does not exist: deploy "
                                "deploy/aws/template.yaml or run `tidings migrate`") from exc
        keys = {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]}
        indexes = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])}
        if keys != {"pk": "HASH", "sk": "RANGE"} or not set(INDEXES) <= indexes:
            raise NotConfigured(f"the DynamoDB table {self.name!r} is not laid out for Tidings: "
                                f"it needs keys pk/sk and the indexes {', '.join(INDEXES)}")

    # Reads --------------------------------------------------------------------------------

    async def get(self, pk: str, sk: str, *, consistent: bool = True) -> Item | None:
        client = await self.client()
        answer = await client.get_item(TableName=self.name, Key=key(pk, sk),
                                       ConsistentRead=consistent)
        item: Item | None = answer.get("Item")
        return item

    async def get_many(self, keys: Sequence[tuple[str, str]], *,
                       consistent: bool = True) -> list[Item]:
        """BatchGetItem, 100 keys a call, until nothing is left unprocessed."""
        client = await self.client()
        out: list[Item] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {self.name: {
                "Keys": [key(pk, sk) for pk, sk in unique[start:start + 100]],
                "ConsistentRead": consistent}}
            delay = 0.02
            while request:
                answer = await client.batch_get_item(RequestItems=request)
                out.extend(answer.get("Responses", {}).get(self.name, []))
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return out

    async def query(self, pk: str, *, index: str | None = None, sk_prefix: str | None = None,
                    sk_from: str | None = None, sk_to: str | None = None, forward: bool = True,
                    limit: int | None = None, start: dict[str, Any] | None = None,
                    filter: str | None = None, values: dict[str, Any] | None = None,
                    names: dict[str, str] | None = None,
                    consistent: bool = True) -> tuple[list[Item], dict[str, Any] | None]:
        """One page of a partition: items with `sk` in [sk_from, sk_to] (both inclusive) or
        beginning with `sk_prefix`, at most `limit` of them *before* the filter (DynamoDB's
        rule). Returns the items and the key to go on from (None at the end)."""
        client = await self.client()
        pk_name, sk_name = (f"{index}pk", f"{index}sk") if index else ("pk", "sk")
        expr = "#pk = :pk"
        attr_names = {"#pk": pk_name}
        attr_values: dict[str, Any] = {":pk": {"S": pk}}
        if sk_prefix is not None:
            expr += " AND begins_with(#sk, :prefix)"
            attr_names["#sk"] = sk_name
            attr_values[":prefix"] = {"S": sk_prefix}
        elif sk_from is not None or sk_to is not None:
            attr_names["#sk"] = sk_name
            if sk_from is not None and sk_to is not None:
                expr += " AND #sk BETWEEN :from AND :to"
                attr_values[":from"], attr_values[":to"] = {"S": sk_from}, {"S": sk_to}
            elif sk_from is not None:
                expr += " AND #sk >= :from"
                attr_values[":from"] = {"S": sk_from}
            else:
                expr += " AND #sk <= :to"
                attr_values[":to"] = {"S": sk_to}
        request: dict[str, Any] = {
            "TableName": self.name, "KeyConditionExpression": expr,
            "ScanIndexForward": forward,
            "ConsistentRead": consistent and index is None}
        if index:
            request["IndexName"] = index
        if filter:
            request["FilterExpression"] = filter
        attr_names.update(names or {})
        attr_values.update(values or {})
        request["ExpressionAttributeNames"] = attr_names
        request["ExpressionAttributeValues"] = attr_values
        if limit is not None:
            request["Limit"] = limit
        if start:
            request["ExclusiveStartKey"] = start
        answer = await client.query(**request)
        return answer.get("Items", []), answer.get("LastEvaluatedKey")

    async def query_all(self, pk: str, *, page: int = 500, **options: Any) -> AsyncIterator[Item]:
        """Every item of a query, page after page."""
        start: dict[str, Any] | None = None
        while True:
            items, start = await self.query(pk, limit=page, start=start, **options)
            for item in items:
                yield item
            if start is None:
                return

    async def query_until(self, pk: str, wanted: int, **options: Any) -> list[Item]:
        """Up to `wanted` items that pass the query's filter, reading on past filtered pages."""
        out: list[Item] = []
        start: dict[str, Any] | None = None
        while len(out) < wanted:
            items, start = await self.query(pk, limit=max(wanted - len(out), 25), start=start,
                                            **options)
            out.extend(items)
            if start is None:
                break
        return out[:wanted]


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}
