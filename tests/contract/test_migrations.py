"""The migrations build exactly the schema the code describes, and fill what they add."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tidings.adapters.store.sql.schema import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Migrations are the SQL stores' (the DynamoDB table has no schema to migrate)."""
    return str(request.param)


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


def test_0005_indexes_the_attributes_of_existing_users(tmp_path):
    """Users made before segments existed can be found by a segment after the upgrade, and a
    downgrade removes what was still scheduled."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")

    def run(conn, target, down=False):
        config = Config()
        config.set_main_option("script_location",
                               str(files("tidings.adapters.store.sql") / "migrations"))
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, target)

    with engine.begin() as conn:
        run(conn, "0004")
        for i in range(2500):  # more than one page of the backfill
            conn.execute(text(
                "INSERT INTO users (app_id, id, attributes, created_at, updated_at) "
                "VALUES ('acme', :id, :attrs, 0, 0)"),
                {"id": f"u{i:04d}", "attrs": '{"plan": "pro", "tags": ["a", "b"]}'
                 if i % 2 else '{"address": {"city": "Rome"}}'})
        run(conn, "0005")
        rows = conn.execute(text(
            "SELECT path, kind, text, count(*) FROM user_attributes "
            "GROUP BY path, kind, text ORDER BY path, kind, text")).all()
        assert [tuple(r) for r in rows] == [
            ("address", "o", None, 1250), ("address.city", "s", "Rome", 1250),
            ("plan", "s", "pro", 1250), ("tags", "a", None, 1250),
            ("tags", "s", "a", 1250), ("tags", "s", "b", 1250)]
        conn.execute(text(
            "INSERT INTO notifications (id, app_id, user_id, recipient, channels, channel_mask, "
            "data, created_at, send_at, status, priority) VALUES ('01JD000000000000000000000A', "
            "'acme', 'u0001', '{}', '[\"in_app\"]', 2, '{}', 0, 1, 'scheduled', 'normal')"))
        run(conn, "0004", down=True)
        assert conn.execute(text("SELECT count(*) FROM notifications")).scalar() == 0
    engine.dispose()
