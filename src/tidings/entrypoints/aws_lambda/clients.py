"""The AWS clients the functions call themselves: SQS (the delivery queue) and the API Gateway
Management API (frames to WebSocket connections). The store and the providers build their own.

Each is one aiobotocore client per process, opened at its first use and kept open while Lambda
freezes and thaws the process: building a client (loading the service model, the credentials,
a connection pool) costs more than the call it makes.
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

_SQS_HOST = re.compile(
    r"^(?:sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|([a-z0-9-]+)\.queue\.amazonaws\.com)$")
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def queue_location(queue_url: str) -> tuple[str | None, str | None]:
    """(region, endpoint URL) of a queue URL: AWS's own hosts name the region and need no
    endpoint; any other host (a local double) is the endpoint, and the region comes from the
    environment as botocore reads it."""
    parts = urlsplit(queue_url)
    found = _SQS_HOST.match(parts.hostname or "")
    if found:
        return found.group(1) or found.group(2), None
    return None, f"{parts.scheme}://{parts.netloc}"


def management_location(endpoint: str) -> tuple[str | None, str]:
    """(region, endpoint URL) of the Management API of a WebSocket API stage; the endpoint
    keeps the stage path (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`)."""
    found = _EXECUTE_API_HOST.match(urlsplit(endpoint).hostname or "")
    return (found.group(1) if found else None), endpoint.rstrip("/")


async def open_client(stack: AsyncExitStack, service: str, *, region: str | None,
                      endpoint_url: str | None) -> Any:
    """A client that lives as long as `stack`. Standard retry mode (three attempts, with
    back-off) for these calls: unlike a provider's send, a throttled SendMessageBatch or
    PostToConnection has nobody else to retry it within the invocation."""
    from aiobotocore.config import AioConfig

    from ...adapters.aws_client import new_session

    config = AioConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                       read_timeout=10)
    return await stack.enter_async_context(new_session().create_client(
        service, region_name=region, endpoint_url=endpoint_url, config=config))


class ManagementApi:
    """Posts frames to WebSocket connections of one API stage."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def post(self, connection_id: str, data: bytes) -> bool:
        """False when the connection is gone (closed, or never completed its $connect)."""
        from ...adapters.hub.apigateway import is_gone

        try:
            await self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except Exception as exc:
            if is_gone(exc):
                return False
            raise
        return True
