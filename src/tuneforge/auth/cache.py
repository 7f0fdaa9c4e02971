"""Principals of recently authenticated credentials, so most requests authenticate without SQL.

Every API request carries a credential, and looking it up is one of a read's two database
round trips. An entry lives ``ttl_seconds`` at most, and never past its JWT's expiry: a
revoked key, a removed membership or a deactivated user stops working within that time in
every process. A revocation evicts its key at once in the process that served it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from tuneforge.auth.security import API_KEY_PREFIX, hash_api_key
from tuneforge.auth.service import Principal


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: float  # time.monotonic()


JWT_KEY_PREFIX = "jwt:"


def credential_key(bearer: str) -> str:
    """An API key's stored hash (so that revoking it can evict it); a JWT's digest."""
    if bearer.startswith(API_KEY_PREFIX):
        return hash_api_key(bearer)
    return JWT_KEY_PREFIX + hashlib.sha256(bearer.encode()).hexdigest()


class PrincipalCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            self.evict(key)
            return None
        return entry.principal

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl_seconds <= 0:
            return
        now = time.monotonic()
        expires_at = now + self.ttl_seconds
        if principal.expires_at is not None:
            left = (principal.expires_at - datetime.now(UTC)).total_seconds()
            expires_at = min(expires_at, now + left)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                # Insertion order is expiry order, give or take a JWT that ends sooner.
                del self._entries[next(iter(self._entries))]
            self._entries[key] = _Entry(principal, expires_at)

    def evict(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def evict_sessions_of(self, user_id: str) -> None:
        """Forget every login-token principal of the user (signing out); API keys stay."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if k.startswith(JWT_KEY_PREFIX)]:
                if self._entries[key].principal.user_id == user_id:
                    del self._entries[key]
