"""PostgreSQL change data capture (CONTRACT §7b) over logical replication with wal2json.

This package is the only place importing psycopg, one concept a module:

- ``connector``: the Connector protocol (subscribe, read_range, position, snapshot);
- ``poller``: the one task reading the replication slot into the per-table logs;
- ``slot``: the replication slot through PostgreSQL's SQL functions, and server checks;
- ``changes``: wal2json rows → change envelopes and LSN cursors (sans I/O);
- ``logs``: the per-table replay logs and the marker a lost slot leaves;
- ``values``: column values → JSON, shared by the change stream and the snapshot;
- ``snapshot``: a table's rows, consistent with the change stream.
"""

from connectors.postgres.connector import PostgresCdcConnector

__all__ = ["PostgresCdcConnector"]
