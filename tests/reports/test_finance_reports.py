"""The finance team's reports: liability (per partner, valued, with expiry buckets), breakage
(per month and per cohort) and the roll-forward, each reconciling to the ledger to the point,
in JSON and CSV."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.agreements.test_prices import price_body, set_price
from tests.expiry.helpers import award, days_ago, expire
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import scalar
from tests.ledger.test_returns import assert_problem, give_back


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"points_expiry_months": 1})


async def report(client: AsyncClient, headers: dict[str, str], name: str, **params: str) -> dict:
    r = await client.get(f"/v1/reports/{name}", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def owed_now(engine: AsyncEngine, asset: str) -> int:
    return int(
        await scalar(
            engine,
            "SELECT coalesce(sum(balance + held + pending), 0) FROM accounts "
            f"WHERE kind = 'card' AND asset = '{asset}'",
        )
    )


async def activity(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> dict:
    shop, shop_till = await partner_with_key(app, client, operator, name="Shop")
    cafe, cafe_till = await partner_with_key(app, client, operator, name="Cafe")
    await set_price(client, operator, shop["id"], price_body(1_000, 800))
    await set_price(client, operator, cafe["id"], price_body(500, 400))
    card = (await issue_card(client, operator))["card_number"]
    other = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 70, occurred_at=days_ago(40))  # expired already
    shop_buy = await purchase(client, shop_till, card, 30_000, "R-1")  # 300 points, 1500 cb
    assert (await purchase(client, cafe_till, other, 10_000, "R-2")).status_code == 201
    assert (await redeem(client, cafe_till, card, 120, "S-1")).status_code == 201
    returned = await give_back(client, shop_till, shop_buy.json()["transaction_id"], 10_000)
    assert returned.status_code == 201, returned.text
    await expire(app)
    return {"shop": shop, "cafe": cafe, "card": card}


async def test_the_roll_forward_closes_to_the_point(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await activity(app, client, operator)
    since = (datetime.now(UTC) - timedelta(days=70)).isoformat()

    rows = (await report(client, operator, "roll-forward", since=since, period="monthly"))["rows"]

    assert rows and all(r["reconciles"] for r in rows)
    points = [r for r in rows if r["asset"] == "points"]
    for before, after in itertools.pairwise(points):
        assert after["opening"] == before["closing"]
    assert points[-1]["closing"] == await owed_now(engine, "points")
    totals = {k: sum(r[k] for r in points) for k in ("issued", "redeemed", "expired")}
    # 70 awarded, 300 + 100 earned; 120 spent; the 70 expired; the return took 100 back.
    assert totals == {"issued": 470, "redeemed": 120, "expired": 70}
    assert sum(r["adjustments"] for r in points) == -100
    csv = await client.get(
        "/v1/reports/roll-forward", params={"since": since, "format": "csv"}, headers=operator
    )
    assert csv.headers["content-type"].startswith("text/csv")
    header, *lines = csv.text.splitlines()
    assert header.split(",")[:3] == ["period_start", "period_end", "asset"]
    assert len(lines) == len(rows)


async def test_the_liability_shares_what_is_owed_by_where_it_was_earned(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    parties = await activity(app, client, operator)

    body = await report(client, operator, "liability")

    owed = await owed_now(engine, "points")
    assert body["outstanding"] == {
        "points": owed,
        "cashback": await owed_now(engine, "cashback"),
    }
    by_code = {s["partner_code"]: s for s in body["by_source"]}
    assert sum(s["points"] for s in body["by_source"]) == owed
    assert sum(s["cashback"] for s in body["by_source"]) == body["outstanding"]["cashback"]
    shop, cafe = by_code[parties["shop"]["code"]], by_code[parties["cafe"]["code"]]
    # Net issued: shop 200, cafe 100, operator 70: 180 owed shared 2:1:0.7.
    assert (shop["points"], cafe["points"], by_code[None]["points"]) == (97, 49, 34)
    assert (shop["points_value"], cafe["points_value"], by_code[None]["points_value"]) == (
        97,
        25,  # 49 points at half a cent: 24.5, half away from zero
        0,
    )
    assert body["points_value"] == 97 + 25
    buckets = body["expiry_buckets"]
    assert buckets["due"] == 0 and sum(buckets.values()) == owed
    assert buckets["within_30_days"] + buckets["within_90_days"] == owed
    before = await report(client, operator, "liability", as_of=days_ago(10).isoformat())
    # The ledger's time is when postings were posted (the backdated award too): nothing then.
    assert before["outstanding"] == {"points": 0, "cashback": 0}
    assert before["by_source"] == [] and before["expiry_buckets"] is None


async def test_breakage_by_month_and_by_cohort(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 30)
    # Sent late by an offline till: expired already (a second one would expire it itself).
    await award(client, operator, card, 160, occurred_at=days_ago(45))
    old = days_ago(45).astimezone(UTC).date().replace(day=1).isoformat()
    this_month = datetime.now(UTC).date().replace(day=1).isoformat()

    assert await expire(app) == (1, 160)
    body = await report(client, operator, "breakage")

    [month] = body["expired_by_month"]
    assert (month["month"], month["expiries"], month["points"]) == (this_month, 1, 160)
    by_cohort = {c["cohort"]: c for c in body["cohorts"]}
    assert by_cohort[old] == {"cohort": old, "issued": 160, "expired": 160, "rate_bps": 10_000}
    assert by_cohort[this_month] == {
        "cohort": this_month,
        "issued": 30,
        "expired": 0,
        "rate_bps": 0,
    }
    csv = await client.get("/v1/reports/breakage", params={"format": "csv"}, headers=operator)
    assert csv.text.splitlines()[0] == "cohort,issued,expired,rate_bps"


async def test_reports_refuse_bad_periods_and_partner_keys(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    now = datetime.now(UTC).isoformat()
    for name in ("breakage", "roll-forward"):
        r = await client.get(
            f"/v1/reports/{name}", params={"since": now, "until": now}, headers=operator
        )
        assert_problem(r, 422, "invalid_period")
        assert_problem(await client.get(f"/v1/reports/{name}", headers=till), 403, "forbidden")
    for params in ({"format": "xml"}, {"as_of": "yesterday"}, {"as_of": "2026-01-01T00:00:00"}):
        r = await client.get("/v1/reports/liability", params=params, headers=operator)
        assert_problem(r, 422, "validation_error")
    r = await client.get("/v1/reports/roll-forward", params={"period": "hourly"}, headers=operator)
    assert_problem(r, 422, "validation_error")
