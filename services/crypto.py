"""Credential encryption at rest: Fernet tokens under a key list (first encrypts, any decrypts)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.errors import PostroomError
from settings import Settings


class CredentialError(PostroomError):
    """The stored credentials cannot be decrypted with the configured keys."""

    code = "credential_error"


def _fernet(settings: Settings) -> MultiFernet:
    keys = settings.credential_key_list()
    if not keys:
        raise CredentialError("POSTROOM_CREDENTIAL_KEYS is not set.")
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt_json(settings: Settings, obj: dict[str, Any]) -> str:
    """Encrypt a JSON-able dict with the first key."""
    return _fernet(settings).encrypt(json.dumps(obj).encode()).decode()


def decrypt_json(settings: Settings, token: str) -> dict[str, Any]:
    """Decrypt a token made by `encrypt_json` with any configured key."""
    try:
        data = json.loads(_fernet(settings).decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise CredentialError() from None
    if not isinstance(data, dict):
        raise CredentialError()
    return data


def rotate(settings: Settings, token: str) -> str:
    """Re-encrypt a token with the first key, whichever configured key made it."""
    try:
        return _fernet(settings).rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialError() from None
