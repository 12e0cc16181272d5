"""Developer accounts, their applications and portal sessions (CONTRACT §12), on both
backends: no catalogue revision, Conflict on a taken username, sessions that end with
their developer or their time."""

from __future__ import annotations

import pytest

from bridge.secrets import hash_secret, verify_secret
from bridge.store import ApplicationRecord, Conflict, NotFound, PortalSession, Store
from bridge.store.schema import developers
from tests.store.helpers import table_rows

HASH = hash_secret("correct-horse")


async def test_accounts_hold_only_password_hashes(store: Store, store_url: str) -> None:
    before = await store.revision()
    await store.create_developer("ada", HASH, now=1.0)
    with pytest.raises(Conflict, match="ada"):
        await store.create_developer("ada", HASH, now=2.0)
    stored = await store.password_hash("ada")
    assert stored is not None and verify_secret("correct-horse", stored)
    assert await store.password_hash("nobody") is None
    (row,) = await table_rows(store_url, developers)
    assert "correct-horse" not in str(row)
    await store.set_password("ada", hash_secret("another-one"), now=3.0)
    await store.set_password("grace", HASH, now=3.0)
    assert verify_secret("another-one", await store.password_hash("ada") or "")
    assert await store.developers() == ["ada", "grace"]
    assert await store.revision() == before, "accounts are no catalogue change"


async def test_ownership_and_sessions_end_with_their_developer(store: Store) -> None:
    await store.create_developer("ada", HASH, now=1.0)
    await store.create_application(ApplicationRecord("app-ada", "Ada's", HASH))
    await store.own_application("ada", "app-ada")
    assert await store.applications_of("ada") == ["app-ada"]
    assert await store.applications_of("grace") == []
    await store.open_session("s-old", PortalSession("ada", "csrf-0", expires_at=5.0), now=1.0)
    await store.open_session("s-dev", PortalSession("ada", "csrf-1", expires_at=100.0), now=10.0)
    await store.open_session("s-pub", PortalSession(None, "csrf-2", expires_at=100.0), now=10.0)
    assert await store.session("s-old", now=1.0) is None, "expired sessions go as others open"
    found = await store.session("s-dev", now=50.0)
    assert found == PortalSession("ada", "csrf-1", 100.0) and not found.publisher
    assert await store.session("s-dev", now=100.0) is None, "expired"
    publisher = await store.session("s-pub", now=50.0)
    assert publisher is not None and publisher.publisher

    await store.delete_developer("ada")
    assert await store.session("s-dev", now=50.0) is None
    assert await store.applications_of("ada") == []
    assert await store.get_application("app-ada") is not None, "applications stay"
    assert await store.session("s-pub", now=50.0) is not None
    await store.close_session("s-pub")
    assert await store.session("s-pub", now=50.0) is None
    with pytest.raises(NotFound):
        await store.delete_developer("ada")


async def test_failed_sign_ins_are_counted_per_key_and_forgotten_after_their_window(
    store: Store,
) -> None:
    await store.sign_in_failed(["user:ada"], now=10.0, forget_before=0.0)
    await store.sign_in_failed(["user:ada", "address:10.0.0.1"], now=20.0, forget_before=0.0)
    keys = ["user:ada", "address:10.0.0.1", "user:grace"]
    assert await store.sign_in_failures(keys, since=5.0) == {
        "user:ada": [10.0, 20.0],
        "address:10.0.0.1": [20.0],
    }
    assert await store.sign_in_failures(keys, since=10.0) == {
        "user:ada": [20.0],
        "address:10.0.0.1": [20.0],
    }
    await store.sign_in_failed(["user:grace"], now=80.0, forget_before=15.0)
    assert await store.sign_in_failures(keys, since=0.0) == {
        "user:ada": [20.0],
        "address:10.0.0.1": [20.0],
        "user:grace": [80.0],
    }
