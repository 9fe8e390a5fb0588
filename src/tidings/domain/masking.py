"""What logs may show of personal data: enough to recognise it, not enough to use it."""

from __future__ import annotations


def mask_phone(phone: str) -> str:
    return phone[:3] + "*" * max(len(phone) - 5, 0) + phone[-2:] if len(phone) > 5 else "***"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


def mask_token(token: str) -> str:
    return token[:6] + "…" + token[-4:] if len(token) > 12 else "***"


def mask_target(channel: str, target: str) -> str:
    if channel == "sms":
        return mask_phone(target)
    if channel == "email":
        return mask_email(target)
    return mask_token(target)
