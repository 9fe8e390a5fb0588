"""What each user agreed to receive, per channel and per category, and what an app insists on.

A user's document is parsed strictly when they write it: a misspelt channel or category must be
a 422 they can fix, not a setting that silently does nothing. The stored copy is read leniently,
because a document written by an older version must never stop a send. Categories an app marks
mandatory (security alerts, receipts the law requires) cannot be opted out of at all.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .errors import ValidationFailed
from .notifications import Channel

CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_CATEGORIES = 200
CHANNELS = frozenset(c.value for c in Channel)
# Push and SMS wake people up; e-mail and the in-app inbox wait quietly to be read.
DEFAULT_HELD_CHANNELS = frozenset({Channel.PUSH.value, Channel.SMS.value})
_CHANNEL_LIST = ", ".join(c.value for c in Channel)


@dataclasses.dataclass(frozen=True)
class CategoryPreference:
    enabled: bool | None = None
    channels: dict[str, bool] = dataclasses.field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.enabled is not None:
            doc["enabled"] = self.enabled
        if self.channels:
            doc["channels"] = dict(self.channels)
        return doc


@dataclasses.dataclass(frozen=True)
class Preferences:
    channels: dict[str, bool] = dataclasses.field(default_factory=dict)
    categories: dict[str, CategoryPreference] = dataclasses.field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        return {"channels": dict(self.channels),
                "categories": {name: c.to_doc() for name, c in self.categories.items()}}

    @classmethod
    def from_doc(cls, doc: object) -> Preferences:
        """Whatever of a stored document still makes sense; the rest is as if never set."""
        if not isinstance(doc, Mapping):
            return cls()
        categories: dict[str, CategoryPreference] = {}
        raw = doc.get("categories")
        for name, value in (raw.items() if isinstance(raw, Mapping) else ()):
            if isinstance(name, str) and CATEGORY.fullmatch(name) and isinstance(value, Mapping):
                enabled = value.get("enabled")
                categories[name] = CategoryPreference(
                    enabled if isinstance(enabled, bool) else None, _lenient_flags(value.get("channels")))
        return cls(_lenient_flags(doc.get("channels")), categories)


def _lenient_flags(value: object) -> dict[str, bool]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if k in CHANNELS and isinstance(v, bool)}


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _object(value: object, prefix: str, allowed: tuple[str, ...]) -> Mapping[str, object]:
    """`value` as a JSON object whose keys are among `allowed`; `prefix` names it ("" = the body)."""
    if not isinstance(value, Mapping):
        raise ValidationFailed.on(prefix or "$", "must be an object")
    for key in value:
        if key not in allowed:
            raise ValidationFailed.on(_join(prefix, key), f"is not a known field ({', '.join(allowed)})")
    return value


def _flags(value: object, prefix: str) -> dict[str, bool]:
    if not isinstance(value, Mapping):
        raise ValidationFailed.on(prefix, "must be an object of channel: true|false")
    flags: dict[str, bool] = {}
    for key, flag in value.items():
        if key not in CHANNELS:
            raise ValidationFailed.on(_join(prefix, key), f"is not a channel ({_CHANNEL_LIST})")
        if not isinstance(flag, bool):
            raise ValidationFailed.on(_join(prefix, key), "must be true or false")
        flags[key] = flag
    return flags


def _category(name: str, value: object, prefix: str, mandatory: frozenset[str]) -> CategoryPreference:
    doc = _object(value, prefix, ("enabled", "channels"))
    raw = doc.get("enabled")
    if "enabled" in doc and not isinstance(raw, bool):
        raise ValidationFailed.on(_join(prefix, "enabled"), "must be true or false")
    enabled = raw if isinstance(raw, bool) else None
    channels = _flags(doc.get("channels", {}), _join(prefix, "channels"))
    if name in mandatory:
        refused = "enabled" if enabled is False else next(
            (_join("channels", c) for c, on in channels.items() if not on), None)
        if refused is not None:
            raise ValidationFailed.on(
                _join(prefix, refused),
                f"category {name} is mandatory for this app and cannot be opted out of")
    return CategoryPreference(enabled, channels)


def parse_preferences(doc: object, mandatory: frozenset[str], field: str = "preferences") -> Preferences:
    """A user's preferences as written through the API. `field` prefixes every error's field
    name; pass "" when the document is the whole request body."""
    top = _object(doc, field, ("channels", "categories"))
    channels = _flags(top.get("channels", {}), _join(field, "channels"))
    prefix = _join(field, "categories")
    raw = top.get("categories", {})
    if not isinstance(raw, Mapping):
        raise ValidationFailed.on(prefix, "must be an object of category: {enabled, channels}")
    if len(raw) > MAX_CATEGORIES:
        raise ValidationFailed.on(prefix, f"at most {MAX_CATEGORIES} categories")
    categories: dict[str, CategoryPreference] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not CATEGORY.fullmatch(name):
            raise ValidationFailed.on(_join(prefix, name),
                                      "a category matches ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
        categories[name] = _category(name, value, _join(prefix, name), mandatory)
    return Preferences(channels, categories)


def allows(prefs: Preferences | None, category: str | None, channel: str,
           mandatory: frozenset[str]) -> bool:
    """Whether `channel` may carry a send of `category` to this user. A category's own setting
    for the channel wins; then a category turned off; then the channel's setting (a category
    left on does not undo a channel the user turned off everywhere); no setting means yes."""
    if category is not None and category in mandatory:
        return True
    if prefs is None:
        return True
    chosen = prefs.categories.get(category) if category is not None else None
    if chosen is not None:
        if channel in chosen.channels:
            return chosen.channels[channel]
        if chosen.enabled is False:
            return False
    return prefs.channels.get(channel, True)


def held_channels(defaults: Mapping[str, Any]) -> frozenset[str]:
    """The channels an app holds during quiet hours, from its stored defaults."""
    value = defaults.get("quiet_hours_channels")
    if not isinstance(value, list | tuple):
        return DEFAULT_HELD_CHANNELS
    return frozenset(c for c in value if isinstance(c, str) and c in CHANNELS)


def mandatory(defaults: Mapping[str, Any]) -> frozenset[str]:
    """The categories an app sends whatever its users chose, from its stored defaults."""
    value = defaults.get("mandatory_categories")
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(c for c in value if isinstance(c, str) and CATEGORY.fullmatch(c))


def parse_quiet_hours_channels(value: object, field: str = "quiet_hours_channels") -> list[str]:
    """The write-side check for an app's `quiet_hours_channels`, so its lenient read never has
    anything to drop."""
    if not isinstance(value, list):
        raise ValidationFailed.on(field, f"must be a list of channels ({_CHANNEL_LIST})")
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in CHANNELS:
            raise ValidationFailed.on(f"{field}.{i}", f"is not a channel ({_CHANNEL_LIST})")
    return list(dict.fromkeys(value))


def parse_mandatory_categories(value: object, field: str = "mandatory_categories") -> list[str]:
    """The write-side check for an app's `mandatory_categories`."""
    if not isinstance(value, list):
        raise ValidationFailed.on(field, "must be a list of categories")
    if len(value) > MAX_CATEGORIES:
        raise ValidationFailed.on(field, f"at most {MAX_CATEGORIES} categories")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not CATEGORY.fullmatch(item):
            raise ValidationFailed.on(f"{field}.{i}", "a category matches ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    return list(dict.fromkeys(value))
