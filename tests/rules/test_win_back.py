"""Win-back campaigns: the first purchase of a card that bought nothing for a while."""

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key


async def _buy(
    client: AsyncClient, till: dict[str, str], card: str, at: datetime | None = None
) -> Any:
    body: dict[str, Any] = {
        "kind": "purchase",
        "card_number": card,
        "amount": 1_000,
        "currency": "EUR",
        "reference": idem()["Idempotency-Key"],
    }
    if at is not None:
        body["occurred_at"] = at.isoformat()
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return {a["rule_ref"]: a["points"] for a in r.json()["applied"] if a["rule"] == "campaign"}


async def test_a_card_quiet_for_the_period_is_won_back_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    now = datetime.now(UTC)
    campaign = {
        "code": "miss-you",
        "name": "We miss you",
        "kind": "win_back",
        "bonus_points": 200,
        "quiet_days": 30,
        "starts_at": (now - timedelta(days=90)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    r = await client.post("/v1/campaigns", json=campaign, headers=operator)
    assert r.status_code == 201, r.text
    assert r.json()["quiet_days"] == 30

    quiet, busy, new = [(await issue_card(client, operator))["card_number"] for _ in range(3)]
    assert await _buy(client, till, quiet, now - timedelta(days=31)) == {}
    assert await _buy(client, till, busy, now - timedelta(days=29)) == {}

    assert await _buy(client, till, quiet) == {"miss-you": 200}
    assert await _buy(client, till, quiet) == {}  # not quiet any more
    assert await _buy(client, till, busy) == {}
    assert await _buy(client, till, new) == {}  # never bought: a first purchase, not a win-back
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_a_win_back_campaign_needs_its_quiet_days(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    base = {
        "code": "wb",
        "name": "Win back",
        "bonus_points": 10,
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    for body in (
        {**base, "kind": "win_back"},
        {**base, "kind": "first_purchase", "quiet_days": 30},
        {**base, "kind": "win_back", "quiet_days": 0},
    ):
        r = await client.post("/v1/campaigns", json=body, headers=operator)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), body
    assert (await client.get("/v1/campaigns", headers=operator)).json() == []
