"""The migrations build exactly the schema the code describes, and fill what they add."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tidings.adapters.store.sql.schema import metadata


async def test_migrations_match_the_tables(store):
    async with store.reader() as tx:
        conn = tx.connection

        def diff(sync_conn):
            return compare_metadata(MigrationContext.configure(sync_conn), metadata)

        if hasattr(conn, "run_sync"):
            differences = await conn.run_sync(diff)
        else:
            differences = diff(conn._conn)
    assert differences == []
