"""The one table of backends and providers, imported lazily by name so that the embedded mode
never imports a driver or SDK it does not use."""

from __future__ import annotations

import importlib
from typing import Any

from ..domain.errors import NotConfigured

PROVIDERS: dict[str, str] = {
    "log": "tidings.adapters.providers.log:LogProvider",
}

STORES: dict[str, str] = {
    "sqlite": "tidings.adapters.store.sql.store:SqlStore",
    "postgresql": "tidings.adapters.store.sql.store:SqlStore",
}

# The extra that brings each optional module's dependencies.
EXTRAS: dict[str, str] = {"asyncpg": "postgres"}


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


def build_provider(name: str, config: dict[str, Any]) -> Any:
    return load(PROVIDERS, name, "provider")(config)
