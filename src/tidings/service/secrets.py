"""Encryption at rest of provider secrets and signing secrets (Fernet: AES-128-CBC + HMAC).

Several keys may be given, comma separated: the first encrypts, all decrypt, so a key can be
rotated without re-encrypting everything at once.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..domain.errors import NotConfigured


def _fernet(secret: str) -> Fernet:
    secret = secret.strip()
    try:
        if len(base64.urlsafe_b64decode(secret.encode())) == 32:
            return Fernet(secret.encode())
    except (ValueError, TypeError):
        pass
    if len(secret) < 32:
        raise NotConfigured(
            "TIDINGS_SECRET_KEY must be a Fernet key or at least 32 characters; "
            "make one with `tidings secret-key`"
        )
    # A long passphrase is stretched into a key; it is already high-entropy by the rule above.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


class SecretBox:
    def __init__(self, keys: str) -> None:
        parts = [k for k in keys.split(",") if k.strip()]
        if not parts:
            raise NotConfigured("TIDINGS_SECRET_KEY is empty")
        self._fernet = MultiFernet([_fernet(k) for k in parts])

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise NotConfigured(
                "a stored secret cannot be decrypted: TIDINGS_SECRET_KEY is not the key it was "
                "written with (list the old key after the new one to rotate)"
            ) from exc

    @staticmethod
    def generate() -> str:
        return Fernet.generate_key().decode()
