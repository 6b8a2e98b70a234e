"""Idempotency records older than the retention are purged; newer ones keep answering."""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.idempotency.retention import purge
from tests.factories.cards import funded_card


async def _award(client: AsyncClient, operator: dict[str, str], card: str, key: str) -> bytes:
    body = {"kind": "award", "card_number": card, "points": 5, "reason": "r"}
    r = await client.post("/v1/accruals", json=body, headers={**operator, "Idempotency-Key": key})
    assert r.status_code == 201, r.text
    return r.content


async def _keys(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT key FROM idempotency_keys"))).scalars())


async def test_old_records_are_purged_in_pages_and_recent_ones_still_replay(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await funded_card(client, operator, 10))["card_number"]
    first = {key: await _award(client, operator, card, key) for key in ("old-1", "old-2", "old-3")}
    recent = await _award(client, operator, card, "recent")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '31 days'"
                " WHERE key LIKE 'old-%'"
            )
        )
    assert await purge(engine, app.state.program, days=30, page=2) == 3
    assert "recent" in await _keys(engine) and not {"old-1", "old-2"} & await _keys(engine)
    assert await purge(engine, app.state.program, days=30) == 0

    # A retry within the retention replays; a key purged runs afresh (a new award).
    assert await _award(client, operator, card, "recent") == recent
    assert await _award(client, operator, card, "old-1") != first["old-1"]


async def test_the_cli_purges(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine, database_url: str
) -> None:
    card = (await funded_card(client, operator, 10))["card_number"]
    await _award(client, operator, card, "old")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE idempotency_keys SET created_at = now() - interval '40 days'")
        )

    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["purge-idempotency"],
            env={"DATABASE_URL": database_url, "PROGRAM_CURRENCY": "EUR"},
            catch_exceptions=False,
        )
        return result.exit_code, result.output

    get_settings.cache_clear()
    try:
        # The funding award's key and this one: the CLI runs outside the test's event loop.
        assert await asyncio.to_thread(invoke) == (
            0,
            "purged 2 idempotency records older than 30 days\n",
        )
    finally:
        get_settings.cache_clear()
    assert await _keys(engine) == set()
