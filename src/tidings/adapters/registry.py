"""The one table of backends and providers, imported lazily by name so that the embedded mode
never imports a driver or SDK it does not use."""

from __future__ import annotations

import importlib
from typing import Any

from ..domain.errors import NotConfigured

PROVIDERS: dict[str, str] = {
    "log": "tidings.adapters.providers.log:LogProvider",
    "fcm": "tidings.adapters.providers.fcm:FcmProvider",
    "apns": "tidings.adapters.providers.apns:ApnsProvider",
    "webpush": "tidings.adapters.providers.webpush:WebPushProvider",
    "sns": "tidings.adapters.providers.sns:SnsProvider",
    "ses": "tidings.adapters.providers.ses:SesProvider",
    "smtp": "tidings.adapters.providers.smtp:SmtpProvider",
    "twilio": "tidings.adapters.providers.twilio:TwilioProvider",
    "webhook": "tidings.adapters.providers.webhook:WebhookProvider",
}

STORES: dict[str, str] = {
    "sqlite": "tidings.adapters.store.sql.store:SqlStore",
    "postgresql": "tidings.adapters.store.sql.store:SqlStore",
    "dynamodb": "tidings.adapters.store.dynamodb.store:DynamoStore",
}

HUBS: dict[str, str] = {
    "memory": "tidings.adapters.hub.memory:MemoryHub",
    "redis": "tidings.adapters.hub.redis:RedisHub",
    "apigateway": "tidings.adapters.hub.apigateway:ApiGatewayHub",
}

# The extra that brings each optional module's dependencies.
EXTRAS: dict[str, str] = {"asyncpg": "postgres", "aiobotocore": "aws", "botocore": "aws", "mangum": "aws",
                          "redis": "redis"}


def load(table: dict[str, str], name: str, what: str) -> Any:
    target = table.get(name)
    if target is None:
        raise NotConfigured(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        hint = f": pip install 'tidings[{extra}]'" if extra else ""
        raise NotConfigured(f"{what} {name!r} needs {exc.name}{hint}") from exc
    return getattr(module, attr)


def build_provider(name: str, config: dict[str, Any], options: Any = None) -> Any:
    """The named provider for one app's (decrypted) settings; `options` is a
    `providers.options.ProviderOptions` with the process-wide knobs."""
    if options is None:
        from .providers.options import ProviderOptions
        options = ProviderOptions()
    return load(PROVIDERS, name, "provider")(config, options)
