"""The audit rebuilds the ledger's promises from its entries and reports what disagrees."""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key


async def _some_postings(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> str:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 40))["card_number"]
    purchase = {"kind": "purchase", "card_number": card, "amount": 999, "currency": "EUR"}
    for i in range(3):
        r = await client.post(
            "/v1/accruals", json={**purchase, "reference": f"p{i}"}, headers={**till, **idem()}
        )
        assert r.status_code == 201, r.text
    spend = {"card_number": card, "asset": "cashback", "amount": 20, "reference": "r"}
    r = await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return card


async def test_a_clean_ledger_passes(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    await _some_postings(app, client, operator)
    report = (await client.get("/v1/audit", headers=operator)).json()
    assert report["ok"] is True
    assert report["transactions"] == 5  # funding award, three purchases, one redemption
    assert report["entries"] == 2 + 3 * 4 + 2
    assert report["asset_totals"] == {"points": 0, "cashback": 0}
    assert report["unbalanced_transactions"] == []
    assert report["card_balance_mismatches"] == []
    assert report["hold_mismatches"] == []


async def test_holds_that_disagree_with_the_accounts_are_reported(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = {"card_number": card, "asset": "points", "amount": 30, "reference": "order-1"}
    r = await client.post("/v1/holds", json=hold, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True

    async with engine.begin() as conn:
        # A hold marked settled without the release its value needs.
        await conn.execute(
            text("UPDATE holds SET status = 'voided', settled_at = now() WHERE id = :id"),
            {"id": r.json()["id"]},
        )
    report = (await client.get("/v1/audit", headers=operator)).json()
    assert report["ok"] is False
    assert sorted(report["hold_mismatches"], key=lambda m: str(m["card_number"])) == [
        {"card_number": card, "asset": "points", "stored": 30, "from_holds": 0},
        {"card_number": None, "asset": "points", "stored": 30, "from_holds": 0},
    ]


async def test_a_tampered_balance_is_reported(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await _some_postings(app, client, operator)
    async with engine.begin() as conn:
        # Balances are the one mutable figure; entries cannot be touched (triggers).
        await conn.execute(
            text(
                "UPDATE accounts SET balance = balance + 7 WHERE asset = 'points' AND card_id ="
                " (SELECT id FROM cards WHERE card_number = :n)"
            ),
            {"n": card},
        )
    report = (await client.get("/v1/audit", headers=operator)).json()
    assert report["ok"] is False
    [mismatch] = report["card_balance_mismatches"]
    assert mismatch["card_number"] == card and mismatch["asset"] == "points"
    assert mismatch["stored"] == mismatch["from_entries"] + 7


async def test_partner_keys_may_not_audit(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    response = await client.get("/v1/audit", headers=till)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_cli_audit_exits_non_zero_on_a_finding(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    card = await _some_postings(app, client, operator)

    def run() -> tuple[int, str]:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli, ["audit"], env={"DATABASE_URL": database_url})
        finally:
            get_settings.cache_clear()
        return result.exit_code, result.output

    code, output = await asyncio.to_thread(run)
    assert code == 0, output
    assert '"ok": true' in output

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE accounts SET balance = 0 WHERE asset = 'cashback' AND card_id ="
                " (SELECT id FROM cards WHERE card_number = :n)"
            ),
            {"n": card},
        )
    code, output = await asyncio.to_thread(run)
    assert code == 1, output
    assert card in output
