"""Standard Webhooks signatures, as OpenAI's SDKs verify them (``webhooks.unwrap``).

The signature is an HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed with
the secret's bytes (the base64 after ``whsec_``). A header may carry several signatures,
space-separated: during a rotation that keeps the old secret, a delivery is signed with both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """Enough to tell two secrets apart, never enough to sign with."""
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    signing_secrets: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three ``webhook-*`` headers of one delivery attempt."""
    signatures = " ".join(signature(s, message_id, timestamp, body) for s in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
