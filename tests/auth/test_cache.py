"""The per-process cache of checked credentials: how long an entry may be trusted."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tuneforge.auth.cache import PrincipalCache
from tuneforge.auth.service import CallingOrganization, CallingUser, Principal
from tuneforge.db.tables.auth import Role


def principal(expires_at: datetime | None = None) -> Principal:
    return Principal(
        user=CallingUser(id="u", email="u@example.com", name="U", created_at=datetime.now(UTC)),
        organization=CallingOrganization(id="o", name="O"),
        role=Role.OWNER,
        expires_at=expires_at,
    )


def test_an_entry_never_outlives_its_jwt() -> None:
    cache = PrincipalCache(ttl_seconds=60)
    cache.put("jwt", principal(expires_at=datetime.now(UTC) + timedelta(seconds=0.1)))
    cache.put("key", principal())

    time.sleep(0.15)

    assert cache.get("jwt") is None
    assert cache.get("key") is not None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = PrincipalCache(ttl_seconds=0)
    cache.put("key", principal())

    assert cache.get("key") is None


def test_a_full_cache_drops_its_oldest_entry() -> None:
    cache = PrincipalCache(ttl_seconds=60, max_entries=2)
    for key in ("first", "second", "third"):
        cache.put(key, principal())

    assert cache.get("first") is None
    assert cache.get("second") is not None and cache.get("third") is not None
