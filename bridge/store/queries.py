"""What every aggregate of the state store shares: the revision counter, an existence
check, and stored rows and documents read back as values.

Every mutation of the catalogue (APIs, applications, subscriptions, tiers, signing keys)
bumps the one-row revision counter in its own transaction, so gateways sharing a database
notice each other's changes by polling one number (issue 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, Select, Table, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.errors import NotFound, StoreError
from bridge.store import schema
from bridge.store.engine import Database

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Record = TypeVar("Record", bound="DataclassInstance")
Model = TypeVar("Model", bound=BaseModel)


class Aggregate:
    """Base of the store's parts: each reads and writes its own tables through the one
    :class:`~bridge.store.engine.Database` they share."""

    def __init__(self, db: Database) -> None:
        self._db = db


async def bump(conn: AsyncConnection) -> None:
    """The catalogue changed: the revision goes up with this transaction."""
    await conn.execute(
        update(schema.revision)
        .where(schema.revision.c.id == 1)
        .values(value=schema.revision.c.value + 1)
    )


async def revision(conn: AsyncConnection) -> int:
    value = await conn.scalar(select(schema.revision.c.value).where(schema.revision.c.id == 1))
    if value is None:
        raise StoreError("the state store has no revision row; its schema is broken")
    return int(value)


async def exists(conn: AsyncConnection, query: Select[Any]) -> bool:
    return (await conn.execute(query.limit(1))).first() is not None


async def update_one(
    conn: AsyncConnection,
    table: Table,
    where: ColumnElement[bool],
    values: Mapping[str, Any],
    missing: str,
) -> RowMapping:
    """Update the row ``where`` selects and read it back; NotFound(``missing``) if none."""
    result = await conn.execute(update(table).where(where).values(**values))
    if result.rowcount == 0:
        raise NotFound(missing)
    return (await conn.execute(select(table).where(where))).one()._mapping


def from_row(record: type[Record], row: RowMapping | Mapping[str, Any]) -> Record:
    """A record dataclass of :mod:`bridge.store.records` from the columns of its row (a
    row may hold more columns, such as ``seed_hash``)."""
    return record(**{field.name: row[field.name] for field in fields(record)})


def from_document(
    model: type[Model], document: Any, what: str, context: dict[str, Any] | None = None
) -> Model:
    """A stored JSON document (an API or a tier) validated again as its config model
    (``context``: bridge.config.expression_context, the running limits)."""
    try:
        return model.model_validate(document, context=context)
    except ValidationError as exc:
        raise StoreError(f"a stored {what} no longer validates: {exc}") from exc
