"""Migrations: the models and the migration history describe the same schema, and the history
runs both ways."""

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import alembic_config, head_revision, upgrade
from app.db.urls import async_url
from app.models import Base

LEDGER_TABLES = {
    "accounts",
    "api_keys",
    "cards",
    "entries",
    "holds",
    "idempotency_keys",
    "partners",
    "programs",
    "purchase_returns",
    "transactions",
}
LEDGER_TRIGGERS = {
    "accounts_negative_only_by_clawback",
    "entries_append_only",
    "entries_balanced",
    "entries_no_truncate",
    "expired_points_append_only",
    "payments_append_only",
    "settled_transactions_append_only",
    "statement_lines_append_only",
    "statements_append_only",
    "transactions_append_only",
    "transactions_have_entries",
    "transactions_no_truncate",
}


def _diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        sync_conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


async def _schema(database_url: str) -> dict[str, Any]:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    )
                ).scalars()
            )
            triggers = set(
                (
                    await conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
                ).scalars()
            )
            functions = set(
                (
                    await conn.execute(
                        text(
                            "SELECT proname FROM pg_proc p JOIN pg_namespace n "
                            "ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
                        )
                    )
                ).scalars()
            )
            version = None
            if "alembic_version" in tables:
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
            diff = await conn.run_sync(_diff) if tables >= LEDGER_TABLES else None
    finally:
        await engine.dispose()
    return {
        "tables": tables,
        "triggers": triggers,
        "functions": functions,
        "version": version,
        "diff": diff,
    }


async def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    schema = await _schema(database_url)
    assert schema["diff"] == []
    assert schema["version"] == head_revision()
    assert schema["tables"] >= LEDGER_TABLES
    assert schema["triggers"] == LEDGER_TRIGGERS


async def test_drift_is_detected(database_url: str) -> None:
    """The comparison above can fail: a schema changed behind the models' back shows up."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_entries_account_id"))
            await conn.execute(text("ALTER TABLE cards ADD COLUMN nickname text"))
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in diff)
    assert kinds == ["add_index", "remove_column"]


async def test_downgrade_to_base_then_upgrade_to_head(database_url: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    down = await _schema(database_url)
    assert down["tables"] & LEDGER_TABLES == set()
    assert down["triggers"] == set()
    assert down["functions"] == set()
    assert down["version"] is None

    await asyncio.to_thread(upgrade, database_url)
    up = await _schema(database_url)
    assert up["version"] == head_revision()
    assert up["tables"] >= LEDGER_TABLES
    assert up["triggers"] == LEDGER_TRIGGERS
    assert up["diff"] == []

    # And down and up once more: the downgrade of a freshly upgraded database also works.
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    await asyncio.to_thread(upgrade, database_url)
    assert (await _schema(database_url))["version"] == head_revision()


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(""))
    heads = script.get_heads()
    assert heads == [head_revision()]
    assert head_revision() is not None
