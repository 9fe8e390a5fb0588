"""Users' preferences per channel and category, mandatory categories, and the app settings that
hold channels during quiet hours."""

from __future__ import annotations

import pytest

from tidings.domain.errors import ValidationFailed
from tidings.domain.preferences import (
    DEFAULT_HELD_CHANNELS,
    MAX_CATEGORIES,
    CategoryPreference,
    Preferences,
    allows,
    held_channels,
    mandatory,
    parse_mandatory_categories,
    parse_preferences,
    parse_quiet_hours_channels,
)

NONE: frozenset[str] = frozenset()
SECURITY = frozenset({"security"})

FULL = {
    "channels": {"sms": False, "email": True},
    "categories": {
        "marketing": {"enabled": False},
        "billing": {"channels": {"email": False}},
        "news.weekly": {"enabled": True, "channels": {"push": False, "in_app": True}},
    },
}


def refused(doc, mandatory_categories=NONE, field="preferences") -> tuple[str, str]:
    with pytest.raises(ValidationFailed) as exc:
        parse_preferences(doc, mandatory_categories, field)
    assert len(exc.value.errors) == 1
    return exc.value.errors[0].field, exc.value.errors[0].message


# --- parse_preferences ------------------------------------------------------------------------
def test_parse_reads_every_setting():
    prefs = parse_preferences(FULL, NONE)
    assert prefs.channels == {"sms": False, "email": True}
    assert prefs.categories == {
        "marketing": CategoryPreference(enabled=False),
        "billing": CategoryPreference(channels={"email": False}),
        "news.weekly": CategoryPreference(enabled=True, channels={"push": False, "in_app": True}),
    }


def test_to_doc_gives_back_what_was_written():
    assert parse_preferences(FULL, NONE).to_doc() == FULL
    assert parse_preferences(parse_preferences(FULL, NONE).to_doc(), NONE) == parse_preferences(FULL, NONE)


def test_both_parts_are_optional():
    assert parse_preferences({}, NONE) == Preferences()
    assert Preferences().to_doc() == {"channels": {}, "categories": {}}
    assert parse_preferences({"channels": {"push": False}}, NONE).categories == {}
    assert parse_preferences({"categories": {"x": {}}}, NONE).categories == {"x": CategoryPreference()}


@pytest.mark.parametrize(("doc", "field", "message"), [
    (None, "preferences", "must be an object"),
    ([], "preferences", "must be an object"),
    ({"channel": {}}, "preferences.channel", "is not a known field (channels, categories)"),
    ({"channels": []}, "preferences.channels", "must be an object of channel: true|false"),
    ({"channels": {"fax": False}}, "preferences.channels.fax", "is not a channel (push, in_app, sms, email)"),
    ({"channels": {"Push": False}}, "preferences.channels.Push", "is not a channel (push, in_app, sms, email)"),
    ({"channels": {"sms": 0}}, "preferences.channels.sms", "must be true or false"),
    ({"channels": {"sms": "false"}}, "preferences.channels.sms", "must be true or false"),
    ({"channels": {"sms": None}}, "preferences.channels.sms", "must be true or false"),
    ({"categories": []}, "preferences.categories", "must be an object of category: {enabled, channels}"),
    ({"categories": {"marketing": False}}, "preferences.categories.marketing", "must be an object"),
    ({"categories": {"marketing": {"enable": False}}}, "preferences.categories.marketing.enable",
     "is not a known field (enabled, channels)"),
    ({"categories": {"marketing": {"enabled": "no"}}}, "preferences.categories.marketing.enabled",
     "must be true or false"),
    ({"categories": {"marketing": {"enabled": None}}}, "preferences.categories.marketing.enabled",
     "must be true or false"),
    ({"categories": {"marketing": {"enabled": 0}}}, "preferences.categories.marketing.enabled",
     "must be true or false"),
    ({"categories": {"marketing": {"channels": {"fax": False}}}},
     "preferences.categories.marketing.channels.fax", "is not a channel (push, in_app, sms, email)"),
    ({"categories": {"marketing": {"channels": {"sms": 1}}}},
     "preferences.categories.marketing.channels.sms", "must be true or false"),
    ({"categories": {"marketing": {"channels": "sms"}}},
     "preferences.categories.marketing.channels", "must be an object of channel: true|false"),
])
def test_parse_refuses_naming_the_field(doc, field, message):
    assert refused(doc) == (field, message)


@pytest.mark.parametrize("key", ["", "-marketing", ".hidden", "has space", "a/b", "é", "x" * 65, "a\n"])
def test_parse_refuses_bad_category_keys(key):
    field, message = refused({"categories": {key: {"enabled": False}}})
    assert field == f"preferences.categories.{key}"
    assert message == "a category matches ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


@pytest.mark.parametrize("key", ["a", "billing", "Billing_2", "news.weekly", "app:promo", "a-b", "x" * 64])
def test_parse_accepts_category_keys_like_sends_use(key):
    assert key in parse_preferences({"categories": {key: {"enabled": False}}}, NONE).categories


def test_a_category_key_that_is_not_text_is_refused():
    assert refused({"categories": {3: {}}})[0] == "preferences.categories.3"


def test_at_most_200_categories():
    many = {f"c{i}": {"enabled": False} for i in range(MAX_CATEGORIES)}
    assert len(parse_preferences({"categories": many}, NONE).categories) == MAX_CATEGORIES
    many["one-more"] = {"enabled": False}
    assert refused({"categories": many}) == ("preferences.categories", "at most 200 categories")


def test_field_prefix_is_the_callers():
    assert refused({"channels": {"fax": True}}, field="")[0] == "channels.fax"
    assert refused({"categories": {"m": {"channels": {"fax": True}}}}, field="")[0] == \
        "categories.m.channels.fax"
    assert refused(None, field="") == ("$", "must be an object")
    assert refused({"x": 1}, field="body")[0] == "body.x"


@pytest.mark.parametrize(("doc", "field"), [
    ({"categories": {"security": {"enabled": False}}}, "categories.security.enabled"),
    ({"categories": {"security": {"channels": {"sms": False}}}}, "categories.security.channels.sms"),
    ({"categories": {"security": {"enabled": True, "channels": {"push": True, "email": False}}}},
     "categories.security.channels.email"),
])
def test_a_mandatory_category_cannot_be_opted_out_of(doc, field):
    assert refused(doc, SECURITY, field="") == (
        field, "category security is mandatory for this app and cannot be opted out of")


def test_a_mandatory_category_may_be_opted_into_and_others_out_of():
    doc = {"channels": {"push": False},
           "categories": {"security": {"enabled": True, "channels": {"sms": True}},
                          "marketing": {"enabled": False}}}
    prefs = parse_preferences(doc, SECURITY)
    assert prefs.categories["security"] == CategoryPreference(True, {"sms": True})


def test_mandatory_is_per_app():
    doc = {"categories": {"security": {"enabled": False}}}
    assert parse_preferences(doc, NONE).categories["security"].enabled is False


# --- Preferences.from_doc ---------------------------------------------------------------------
def test_from_doc_reads_a_good_document_like_parse():
    assert Preferences.from_doc(FULL) == parse_preferences(FULL, NONE)


@pytest.mark.parametrize("doc", [None, [], "prefs", 3, {"channels": "x", "categories": ["a"]}])
def test_from_doc_never_raises_on_junk(doc):
    assert Preferences.from_doc(doc) == Preferences()


def test_from_doc_keeps_what_still_makes_sense():
    doc = {"channels": {"sms": False, "fax": False, "push": "no"},
           "categories": {"marketing": {"enabled": False, "channels": {"email": 0, "push": True}},
                          "bad key": {"enabled": False},
                          "billing": "off",
                          "news": {"enabled": None, "channels": []}},
           "extra": 1}
    assert Preferences.from_doc(doc) == Preferences(
        channels={"sms": False},
        categories={"marketing": CategoryPreference(False, {"push": True}),
                    "news": CategoryPreference()})


# --- allows ---------------------------------------------------------------------------------
PREFS = parse_preferences(FULL, NONE)


@pytest.mark.parametrize(("category", "channel", "expected"), [
    # category and channel wins over everything
    ("billing", "email", False),
    ("news.weekly", "push", False),
    ("news.weekly", "in_app", True),
    # then the category
    ("marketing", "email", False),  # channel-wide email is true, the category says no
    ("marketing", "push", False),
    # a category left on does not undo a channel turned off everywhere
    ("news.weekly", "sms", False),
    # then the channel
    ("billing", "sms", False),
    ("billing", "push", True),
    ("unknown", "sms", False),
    ("unknown", "email", True),
    # then yes
    ("unknown", "push", True),
    (None, "push", True),
    (None, "sms", False),
    (None, "email", True),
])
def test_allows_most_specific_setting_wins(category, channel, expected):
    assert allows(PREFS, category, channel, NONE) is expected


def test_a_send_without_a_category_ignores_category_settings():
    prefs = parse_preferences({"categories": {"marketing": {"enabled": False}}}, NONE)
    assert allows(prefs, None, "push", NONE)
    assert not allows(prefs, "marketing", "push", NONE)


def test_no_preferences_allows_everything():
    for channel in ("push", "in_app", "sms", "email"):
        assert allows(None, "marketing", channel, NONE)
        assert allows(None, None, channel, NONE)


def test_a_mandatory_category_always_goes():
    # Stored before the app made it mandatory, or opted out of channel-wide.
    prefs = Preferences(channels={"sms": False},
                        categories={"security": CategoryPreference(False, {"push": False})})
    assert not allows(prefs, "security", "push", NONE)
    for channel in ("push", "sms", "email", "in_app"):
        assert allows(prefs, "security", channel, SECURITY)
    assert not allows(prefs, None, "sms", SECURITY)
    assert not allows(prefs, "other", "sms", SECURITY)


# --- app settings ---------------------------------------------------------------------------
def test_held_channels_default_to_push_and_sms():
    assert held_channels({}) == DEFAULT_HELD_CHANNELS == frozenset({"push", "sms"})
    assert held_channels({"quiet_hours_channels": None}) == DEFAULT_HELD_CHANNELS
    assert held_channels({"quiet_hours_channels": "push"}) == DEFAULT_HELD_CHANNELS


def test_held_channels_as_the_app_set_them():
    assert held_channels({"quiet_hours_channels": ["push", "sms", "email"]}) == {"push", "sms", "email"}
    assert held_channels({"quiet_hours_channels": []}) == frozenset()
    assert held_channels({"quiet_hours_channels": ["push", "fax", 3]}) == {"push"}


def test_mandatory_categories_from_defaults():
    assert mandatory({}) == frozenset()
    assert mandatory({"mandatory_categories": ["security", "billing"]}) == {"security", "billing"}
    assert mandatory({"mandatory_categories": ["security", "bad key", None]}) == {"security"}
    assert mandatory({"mandatory_categories": "security"}) == frozenset()


def test_parse_quiet_hours_channels():
    assert parse_quiet_hours_channels(["sms", "push", "sms"]) == ["sms", "push"]
    assert parse_quiet_hours_channels([]) == []
    with pytest.raises(ValidationFailed) as exc:
        parse_quiet_hours_channels(["push", "fax"], "defaults.quiet_hours_channels")
    assert exc.value.errors[0].field == "defaults.quiet_hours_channels.1"
    with pytest.raises(ValidationFailed) as exc:
        parse_quiet_hours_channels("push")
    assert exc.value.errors[0].field == "quiet_hours_channels"


def test_parse_mandatory_categories():
    assert parse_mandatory_categories(["security", "billing", "security"]) == ["security", "billing"]
    with pytest.raises(ValidationFailed) as exc:
        parse_mandatory_categories(["security", "has space"], "defaults.mandatory_categories")
    assert exc.value.errors[0].field == "defaults.mandatory_categories.1"
    with pytest.raises(ValidationFailed) as exc:
        parse_mandatory_categories({"security": True})
    assert exc.value.errors[0].field == "mandatory_categories"
    with pytest.raises(ValidationFailed) as exc:
        parse_mandatory_categories([f"c{i}" for i in range(MAX_CATEGORIES + 1)])
    assert exc.value.errors[0].message == "at most 200 categories"
