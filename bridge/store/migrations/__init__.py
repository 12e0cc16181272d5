"""Alembic migrations of the state store, run by :meth:`bridge.store.Store.__aenter__`."""
