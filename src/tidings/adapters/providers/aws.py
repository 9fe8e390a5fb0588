"""Shared by the AWS providers (SNS, SES): one lazily built aiobotocore client per provider
instance, and the one reading of AWS errors as send results.

The engine owns retries (back-off, Retry-After, attempt limits), so botocore makes one attempt
per call: its own retries would only hold a worker's lease longer and hide throttling.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from ...domain.delivery import Failed, Retry, SendResult
from ..aws_client import LazyClient, new_session
from .http import TRANSPORT_ERRORS, retry_after, transport_retry
from .options import ProviderOptions

# Answers that say "not now": the same request may work later.
THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "Throttled", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "LimitExceededException", "KMSThrottling", "SlowDown",
    "RequestThrottled", "RequestThrottledException", "ProvisionedThroughputExceededException",
})
SERVER_FAULTS = frozenset({
    "InternalError", "InternalFailure", "InternalErrorException", "InternalServiceErrorException",
    "ServiceUnavailable", "ServiceUnavailableException", "ConcurrentModificationException",
})
# The credentials or the account's permissions were refused: an operator can fix that, so the
# message waits for it (until the engine gives up), and the reason says what to fix.
CREDENTIALS = frozenset({
    "AuthorizationError", "AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
    "UnrecognizedClientException", "SignatureDoesNotMatch", "IncompleteSignature",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "MissingAuthenticationToken",
    "InvalidSignatureException", "RequestExpired",
})

ResultFor = Callable[[str], SendResult]

def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message") or "").strip()


def error_result(exc: BaseException, specific: Mapping[str, ResultFor] | None = None) -> SendResult:
    """What an AWS call's failure means for the message. `specific` maps a service's own error
    codes to a result built from the reason; everything else is read the same for every
    service: throttling and server faults are retried (honouring Retry-After), refused
    credentials (and any 403) are retried with a reason that says so, any other client error
    fails."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        reason = f"{code or status}: {error_message(exc)}".rstrip(": ")[:300]
        if specific and code in specific:
            return specific[code](reason)
        if code in CREDENTIALS or status == 403:
            return Retry(f"AWS credentials refused: {reason}"[:300])
        if code in THROTTLED or code in SERVER_FAULTS or status == 429 or status >= 500:
            headers = {str(k).lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
            return Retry(reason, after=retry_after(headers.get("retry-after")))
        if 400 <= status < 500:
            return Failed(reason)
        return Retry(reason)
    if isinstance(exc, ParamValidationError):  # the request itself is malformed
        return Failed(str(exc).strip()[:300])
    if isinstance(exc, (BotoCoreError, *TRANSPORT_ERRORS)):
        return transport_retry(exc)
    return Retry(f"unexpected {type(exc).__name__}: {exc}"[:300])


def _session_class(context: ssl.SSLContext) -> type:
    """aiobotocore's aiohttp session, trusting `context` instead of botocore's CA bundle."""
    from aiobotocore.httpsession import AIOHTTPSession

    class ContextSession(AIOHTTPSession):  # type: ignore[misc]
        def _build_verify_context(self) -> ssl.SSLContext:
            return context

    return ContextSession


class AwsClient(LazyClient):
    """One aiobotocore client for one service and one app's AWS settings, created on first use
    (concurrent first sends share it) and closed with the provider.

    Credentials are the settings' static keys when given, else the default chain (environment,
    shared files, the instance or task role). TLS trusts `options.ssl_context` when set, else
    botocore's own bundle (which honours AWS_CA_BUNDLE)."""

    def __init__(self, service: str, config: Mapping[str, Any], options: ProviderOptions) -> None:
        super().__init__(service, str(config["region"]), config.get("endpoint_url") or None)
        self._key_id = config.get("access_key_id") or None
        self._secret = config.get("secret_access_key") or None
        self._provider_options = options

    async def _create(self) -> Any:
        from aiobotocore.config import AioConfig

        options = self._provider_options
        extra: dict[str, Any] = {}
        if options.ssl_context is not None:
            extra["http_session_cls"] = _session_class(options.ssl_context)
        config = AioConfig(
            max_pool_connections=options.max_concurrency, connect_timeout=options.timeout,
            read_timeout=options.timeout, retries={"mode": "standard", "total_max_attempts": 1},
            user_agent_extra=options.user_agent, **extra)
        stack = AsyncExitStack()
        client = await stack.enter_async_context(new_session().create_client(
            self._service, region_name=self._region, endpoint_url=self._endpoint_url,
            aws_access_key_id=self._key_id, aws_secret_access_key=self._secret, config=config))
        self._stack = stack
        return client

