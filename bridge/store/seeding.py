"""Seeding: the objects of the config file go into the store at start (issue 3).

Each config object is stored with a ``seed_hash``, the sha256 of its canonical JSON. At
start an absent object is inserted; one whose stored hash equals the config's is left as
it is, so changes made through the management API survive a restart; one whose hash
differs (the config file changed) is overwritten from the config. Objects created through
the API have no seed hash and are never touched.

An application's hash input carries a fingerprint of its secret instead of the secret: a
deterministic scrypt (salted with the client id) as slow as ``hash_secret``, so the
stored hash is no cheaper to brute-force than the stored secret hash. The fingerprint is
also kept on its own (``seed_secret``) to tell whether the config changed the secret.
A seeded application's secret hash is that same scrypt, encoded as ``hash_secret``
encodes: the row holds it in ``seed_secret`` anyway, so a second scrypt with a random
salt protected nothing more and cost every gateway start one scrypt per application.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.config import Application, Config, SubscriptionSeed, stored_document
from bridge.secrets import encoded_hash, new_generation, salted_digest
from bridge.store.schema import apis, applications, new_subscription_id, subscriptions, tiers


def canonical_hash(document: Any) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _seed_salt(client_id: str) -> bytes:
    return b"streambridge seed\x00" + client_id.encode()


def secret_fingerprint(client_id: str, secret: str) -> str:
    """Same secret and client id, same fingerprint; CPU-bound, run it off the loop."""
    return salted_digest(secret, _seed_salt(client_id)).hex()


def seeded_secret_hash(client_id: str, fingerprint: str) -> str:
    """The secret hash of a seeded application: its fingerprint, as ``verify_secret``
    reads it (the module docstring says why that is enough)."""
    return encoded_hash(_seed_salt(client_id), bytes.fromhex(fingerprint))


def application_seed_hash(app: Application, fingerprint: str) -> str:
    return canonical_hash(
        {
            "name": app.name,
            "client_id": app.client_id,
            "client_secret": fingerprint,
            "subscriptions": [sub.model_dump(mode="json") for sub in app.subscriptions],
        }
    )


async def fingerprints(config: Config) -> dict[str, str]:
    """Every config application's secret fingerprint, computed in worker threads before
    the seeding transaction so it holds its lock only for the database work."""
    apps = config.applications
    found = await asyncio.gather(
        *(
            asyncio.to_thread(secret_fingerprint, a.client_id, a.client_secret.get_secret_value())
            for a in apps
        )
    )
    return {app.client_id: fingerprint for app, fingerprint in zip(apps, found, strict=True)}


async def seed(conn: AsyncConnection, config: Config, secret_fingerprints: dict[str, str]) -> bool:
    """Apply the seeding rule inside the caller's write transaction; True if it changed
    anything (the caller then bumps the revision once). Tiers and APIs go first: the
    applications' subscriptions refer to them."""
    changed = False
    for name, tier in config.tiers.items():
        document = tier.model_dump(mode="json")
        changed |= await _seed_document(conn, tiers, {"name": name}, document)
    for api in config.apis:
        key = {"name": api.name, "version": api.version}
        changed |= await _seed_document(conn, apis, key, stored_document(api))
    for app in config.applications:
        fingerprint = secret_fingerprints[app.client_id]
        changed |= await _seed_application(conn, app, fingerprint)
    return changed


def _matches(table: Table, key: dict[str, str]) -> ColumnElement[bool]:
    return and_(*(table.c[column] == value for column, value in key.items()))


async def _seed_document(
    conn: AsyncConnection, table: Table, key: dict[str, str], document: dict[str, Any]
) -> bool:
    seed_hash = canonical_hash(document)
    stored = (await conn.execute(select(table.c.seed_hash).where(_matches(table, key)))).first()
    if stored is None:
        await conn.execute(insert(table).values(**key, document=document, seed_hash=seed_hash))
        return True
    if stored.seed_hash is None or stored.seed_hash == seed_hash:
        return False
    await conn.execute(
        update(table).where(_matches(table, key)).values(document=document, seed_hash=seed_hash)
    )
    return True


async def _seed_application(conn: AsyncConnection, app: Application, fingerprint: str) -> bool:
    seed_hash = application_seed_hash(app, fingerprint)
    where = applications.c.client_id == app.client_id
    stored = (await conn.execute(select(applications).where(where))).first()
    if stored is None:
        await conn.execute(
            insert(applications).values(
                client_id=app.client_id,
                name=app.name,
                secret_hash=seeded_secret_hash(app.client_id, fingerprint),
                generation=new_generation(),
                seed_hash=seed_hash,
                seed_secret=fingerprint,
            )
        )
    elif stored.seed_hash is None or stored.seed_hash == seed_hash:
        return False
    else:
        values: dict[str, Any] = {"name": app.name, "seed_hash": seed_hash}
        if stored.seed_secret != fingerprint:
            # A new secret in the config: like a regeneration, it ends the old tokens.
            values |= {
                "secret_hash": seeded_secret_hash(app.client_id, fingerprint),
                "generation": new_generation(stored.generation),
                "seed_secret": fingerprint,
            }
        await conn.execute(update(applications).where(where).values(**values))
    for sub in app.subscriptions:
        await _seed_subscription(conn, app.client_id, sub)
    return True


async def _seed_subscription(conn: AsyncConnection, client_id: str, sub: SubscriptionSeed) -> None:
    """Add a missing subscription; an existing one takes the config's tier and keeps its
    state, which an administrator may have set through the API."""
    key = {"client_id": client_id, "api": sub.api, "version": sub.version}
    where = _matches(subscriptions, key)
    stored = (await conn.execute(select(subscriptions.c.id).where(where))).first()
    if stored is None:
        await conn.execute(
            insert(subscriptions).values(
                id=new_subscription_id(), **key, tier=sub.tier, state=sub.state
            )
        )
    else:
        await conn.execute(update(subscriptions).where(where).values(tier=sub.tier))
