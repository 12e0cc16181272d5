"""Alembic environment: migrates the connection the store hands over in
``config.attributes["connection"]``, inside the store's own transaction (which holds the
migration lock), and never opens a connection of its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from bridge.store.schema import VERSION_TABLE, metadata


def run_migrations() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the state store migrates a live connection only (no --sql mode)")
    connection = context.config.attributes["connection"]
    if not isinstance(connection, Connection):
        raise RuntimeError("bridge.store passes its connection in config.attributes")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
