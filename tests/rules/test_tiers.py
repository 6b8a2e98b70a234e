"""Tiers: the ladder API (PUT/GET /v1/tiers), the tier bonus a purchase earns, the move up when
a purchase crosses a threshold, the review that moves cards down, qualifying spend over the
ladder's window of calendar months (and what returns take from it), the card view, and tier
and spend following the value through a replacement or a merge.

Qualifying spend lives in card_spend (per card and UTC month); tests that need spend in past
months write those rows with SQL. The review runs in-process (app.rules.review.review) or
through `loyalty-ledger tiers`; the app's own periodic review is off in tests.

The helpers here are shared by tests/rules/test_tier_races.py.
"""

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.rules.review import review
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.ledger.test_returns import assert_problem, ledger_ok, returned_ok, reverse

# The partner of these tests earns 1 point per 1.00 and 5 % cashback (the factory's default).
RATE_POINTS, RATE_PER, RATE_BPS = 1, 100, 500

# Bronze adds nothing, so purchases earned at bronze carry only the partner's entries.
LADDER: list[dict[str, Any]] = [
    {"code": "bronze", "name": "Bronze", "threshold": 0},
    {
        "code": "silver",
        "name": "Silver",
        "threshold": 10_000,
        "points_bonus_pct": 50,
        "cashback_bonus_bps": 100,
    },
    {
        "code": "gold",
        "name": "Gold",
        "threshold": 50_000,
        "points_bonus_pct": 100,
        "cashback_bonus_bps": 250,
    },
]
_DEFAULTS = {"points_bonus_pct": 0, "cashback_bonus_bps": 0}
BY_CODE = {t["code"]: {**_DEFAULTS, **t} for t in LADDER}


# Helpers (shared) ----------------------------------------------------------------------------


async def set_ladder(
    client: AsyncClient,
    operator: dict[str, str],
    tiers: list[dict[str, Any]] | None = None,
    window_months: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"tiers": LADDER if tiers is None else tiers}
    if window_months is not None:
        body["window_months"] = window_months
    r = await client.put("/v1/tiers", json=body, headers=operator)
    assert r.status_code == 200, r.text
    ladder: dict[str, Any] = r.json()
    return ladder


def purchase_body(card: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": f"rcpt-{uuid.uuid4()}",
        **extra,
    }


async def buy(
    client: AsyncClient, till: dict[str, str], card: str, amount: int, **extra: Any
) -> dict[str, Any]:
    """A purchase (lines, redeemed_amount, occurred_at in `extra`); its answer."""
    r = await client.post(
        "/v1/accruals", json=purchase_body(card, amount, **extra), headers={**till, **idem()}
    )
    assert r.status_code in (200, 201), r.text
    answer: dict[str, Any] = r.json()
    assert (r.status_code == 201) == (answer["transaction_id"] is not None), answer
    return answer


async def card_view(client: AsyncClient, operator: dict[str, str], card: str) -> dict[str, Any]:
    r = await client.get(f"/v1/cards/{card}", headers=operator)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def tier_view(
    client: AsyncClient, operator: dict[str, str], card: str
) -> dict[str, Any] | None:
    tier: dict[str, Any] | None = (await card_view(client, operator, card))["tier"]
    return tier


async def run_review(app: FastAPI) -> int:
    return await review(app.state.engine, app.state.program)


async def stored_tier(engine: AsyncEngine, card: str) -> tuple[str | None, datetime | None]:
    """cards.tier and cards.tier_since."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT tier, tier_since FROM cards WHERE card_number = :n"), {"n": card}
            )
        ).one()
    return row.tier, row.tier_since


async def spend_by_month(engine: AsyncEngine, card: str) -> dict[date, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("""
                SELECT s.month, s.amount FROM card_spend s JOIN cards c ON c.id = s.card_id
                WHERE c.card_number = :n ORDER BY s.month
            """),
            {"n": card},
        )
        return {r.month: int(r.amount) for r in rows}


def this_month() -> date:
    now = datetime.now(UTC)
    return date(now.year, now.month, 1)


def months_ago(k: int) -> date:
    month = this_month()
    index = month.year * 12 + month.month - 1 - k
    return date(index // 12, index % 12 + 1, 1)


async def add_past_spend(engine: AsyncEngine, card: str, month: date, amount: int) -> None:
    """Qualifying spend in a past month, written as a purchase of then would have."""
    async with engine.begin() as conn:
        await conn.execute(
            text("""
                INSERT INTO card_spend (card_id, month, amount)
                SELECT id, :month, :amount FROM cards WHERE card_number = :n
                ON CONFLICT (card_id, month)
                DO UPDATE SET amount = card_spend.amount + EXCLUDED.amount
            """),
            {"n": card, "month": month, "amount": amount},
        )


async def age_spend(engine: AsyncEngine, card: str, months: int) -> None:
    """Time passes: the card's spend moves `months` months into the past (by more than the
    span of its rows, so no two rows meet on the way)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("""
                UPDATE card_spend SET month = CAST(month - make_interval(months => :m) AS date)
                WHERE card_id = (SELECT id FROM cards WHERE card_number = :n)
            """),
            {"n": card, "m": months},
        )


async def legs_by_kind(engine: AsyncEngine, transaction_id: str) -> dict[tuple[str, str], int]:
    """(account kind, asset) -> sum of the transaction's entries there."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("""
                SELECT a.kind, e.asset, sum(e.amount) AS amount
                FROM entries e JOIN accounts a ON a.id = e.account_id
                WHERE e.transaction_id = :t GROUP BY a.kind, e.asset
            """),
            {"t": transaction_id},
        )
        return {(r.kind, r.asset): int(r.amount) for r in rows}


async def earnings_rows(engine: AsyncEngine, transaction_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("""
                SELECT rule, rule_ref, rule_version, points, cashback FROM earnings
                WHERE transaction_id = :t
                ORDER BY array_position(ARRAY['base', 'tier', 'campaign'], rule), rule_ref
            """),
            {"t": transaction_id},
        )
        return [dict(r._mapping) for r in rows]


def base_rule(partner: dict[str, Any], eligible: int, version: int = 1) -> dict[str, Any]:
    return {
        "rule": "base",
        "rule_ref": partner["id"],
        "rule_version": version,
        "points": eligible * RATE_POINTS // RATE_PER,
        "cashback": eligible * RATE_BPS // 10_000,
    }


def tier_rule(
    tier: dict[str, Any], base_points: int, eligible: int, ladder_version: int = 1
) -> dict[str, Any] | None:
    """The tier row of `applied`, or None when the tier adds nothing."""
    points = base_points * tier.get("points_bonus_pct", 0) // 100
    cashback = eligible * tier.get("cashback_bonus_bps", 0) // 10_000
    if not (points or cashback):
        return None
    return {
        "rule": "tier",
        "rule_ref": tier["code"],
        "rule_version": ladder_version,
        "points": points,
        "cashback": cashback,
    }


def expected_applied(
    partner: dict[str, Any], eligible: int, tier: dict[str, Any] | None, ladder_version: int = 1
) -> list[dict[str, Any]]:
    base = base_rule(partner, eligible)
    rows = [base]
    if tier is not None:
        bonus = tier_rule(tier, base["points"], eligible, ladder_version)
        if bonus is not None:
            rows.append(bonus)
    return rows


def total(applied: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "points": sum(r["points"] for r in applied),
        "cashback": sum(r["cashback"] for r in applied),
    }


async def tiered_setup(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], **ladder: Any
) -> tuple[dict[str, Any], dict[str, str], str]:
    """The standard ladder, a partner, its till and a fresh card."""
    await set_ladder(client, operator, **ladder)
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    return partner, till, card


# The ladder API ------------------------------------------------------------------------------


async def test_the_ladder_is_versioned_and_read_back_as_stored(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    r = await client.get("/v1/tiers", headers=operator)
    assert_problem(r, 404, "no_tier_ladder")

    first = await set_ladder(
        client, operator, tiers=[{"code": "member", "name": "Member", "threshold": 0}]
    )
    assert first["version"] == 1
    assert first["window_months"] == 12
    assert first["tiers"] == [
        {
            "code": "member",
            "name": "Member",
            "threshold": 0,
            "points_bonus_pct": 0,
            "cashback_bonus_bps": 0,
        }
    ]
    r = await client.get("/v1/tiers", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json() == first

    second = await set_ladder(client, operator, window_months=6)
    assert second["version"] == 2
    assert second["window_months"] == 6
    assert second["tiers"] == [{**_DEFAULTS, **t} for t in LADDER]
    assert second["created_at"] >= first["created_at"]
    r = await client.get("/v1/tiers", headers=operator)
    assert r.json() == second

    async with engine.connect() as conn:
        versions = (
            await conn.execute(text("SELECT version FROM tier_ladders ORDER BY version"))
        ).scalars()
        assert list(versions) == [1, 2]
    await ledger_ok(client, operator, engine)


async def test_the_ladder_is_the_operators_alone(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    assert_problem(
        await client.put("/v1/tiers", json={"tiers": LADDER}, headers=till), 403, "forbidden"
    )
    assert_problem(await client.get("/v1/tiers", headers=till), 403, "forbidden")
    assert_problem(await client.put("/v1/tiers", json={"tiers": LADDER}), 401, "unauthorized")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM tier_ladders"))).scalar_one() == 0


# Without a ladder ----------------------------------------------------------------------------


async def test_without_a_ladder_there_is_no_tier_and_no_bonus_but_spend_is_recorded(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]

    answer = await buy(client, till, card, 12_000)
    assert answer["tier"] is None
    assert answer["eligible_amount"] == 12_000
    assert answer["applied"] == [base_rule(partner, 12_000)]
    assert answer["earned"] == {"points": 120, "cashback": 600}
    # Too small to earn anything: nothing posted, so it does not qualify either.
    small = await buy(client, till, card, 19)
    assert small["transaction_id"] is None
    assert small["earned"] == {"points": 0, "cashback": 0}
    assert small["tier"] is None

    assert await tier_view(client, operator, card) is None
    assert await spend_by_month(engine, card) == {this_month(): 12_000}
    assert await stored_tier(engine, card) == (None, None)
    assert await run_review(app) == 0
    assert await legs_by_kind(engine, answer["transaction_id"]) == {
        ("card", "points"): 120,
        ("card", "cashback"): 600,
        ("partner_issued", "points"): -120,
        ("partner_issued", "cashback"): -600,
    }

    # The ladder arrives: the card stands where its spend so far reaches, though no purchase
    # or review has given it a tier yet.
    await set_ladder(client, operator)
    assert await tier_view(client, operator, card) == {
        "code": "silver",
        "name": "Silver",
        "since": None,
        "qualifying_spend": 12_000,
        "next_tier": "gold",
        "to_next_tier": 50_000 - 12_000,
    }
    # The review also looks at open cards with spend but no tier yet: it gives this one the
    # tier its spend reaches (once), and the next purchase earns at that tier.
    assert await run_review(app) == 1
    tier, since = await stored_tier(engine, card)
    assert tier == "silver" and since is not None
    assert await run_review(app) == 0
    answer = await buy(client, till, card, 1_000)
    assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["silver"])
    assert answer["tier"] == {"code": "silver", "upgraded_from": None}
    assert await stored_tier(engine, card) == ("silver", since)
    await ledger_ok(client, operator, engine)


# Crossing thresholds -------------------------------------------------------------------------


async def test_the_purchase_that_crosses_earns_at_the_tier_before_and_the_next_at_the_new(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    tiers = [
        {"code": "bronze", "name": "Bronze", "threshold": 0, "points_bonus_pct": 10},
        *LADDER[1:],
    ]
    partner, till, card = await tiered_setup(app, client, operator, tiers=tiers)
    bronze = {**_DEFAULTS, **tiers[0]}

    first = await buy(client, till, card, 9_900)
    assert first["tier"] == {"code": "bronze", "upgraded_from": None}
    assert first["applied"] == expected_applied(partner, 9_900, bronze)
    assert first["earned"] == {"points": 99 + 9, "cashback": 495}
    assert (await stored_tier(engine, card))[0] == "bronze"

    # One cent earns nothing, so nothing is posted and it does not qualify (only posted
    # purchases do): the card stays bronze, and its spend is still 9_900.
    small = await buy(client, till, card, 1)
    assert small["transaction_id"] is None
    assert small["earned"] == {"points": 0, "cashback": 0}
    assert small["tier"] == {"code": "bronze", "upgraded_from": None}
    assert (await stored_tier(engine, card))[0] == "bronze"
    assert await spend_by_month(engine, card) == {this_month(): 9_900}
    # A purchase that posts and reaches the threshold exactly crosses: it earns at bronze
    # (base 1 point, 10 % of it rounds to 0) and moves the card up.
    crossing = await buy(client, till, card, 100)
    assert crossing["transaction_id"] is not None
    assert crossing["applied"] == expected_applied(partner, 100, bronze)
    assert crossing["earned"] == {"points": 1, "cashback": 5}
    assert crossing["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    tier, since = await stored_tier(engine, card)
    assert tier == "silver"
    view = await tier_view(client, operator, card)
    assert view is not None
    assert view["code"] == "silver"
    assert datetime.fromisoformat(view["since"]) == since
    assert (view["qualifying_spend"], view["next_tier"], view["to_next_tier"]) == (
        10_000,
        "gold",
        40_000,
    )

    after = await buy(client, till, card, 1_000)
    assert after["tier"] == {"code": "silver", "upgraded_from": None}
    assert after["applied"] == [
        base_rule(partner, 1_000),
        {"rule": "tier", "rule_ref": "silver", "rule_version": 1, "points": 5, "cashback": 10},
    ]
    assert after["earned"] == {"points": 15, "cashback": 60}
    assert after["balance"] == {"points": 108 + 1 + 15, "cashback": 495 + 5 + 60}
    await ledger_ok(client, operator, engine)


async def test_a_purchase_crossing_two_thresholds_at_once_lands_on_the_higher(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    big = await buy(client, till, card, 60_000)
    assert big["tier"] == {"code": "gold", "upgraded_from": "bronze"}
    assert big["applied"] == [base_rule(partner, 60_000)]  # bronze adds nothing
    assert await earnings_rows(engine, big["transaction_id"]) == [
        {**base_rule(partner, 60_000), "rule_ref": partner["id"]}
    ]
    assert (await stored_tier(engine, card))[0] == "gold"

    nxt = await buy(client, till, card, 1_000)
    assert nxt["tier"] == {"code": "gold", "upgraded_from": None}
    assert nxt["applied"] == expected_applied(partner, 1_000, BY_CODE["gold"])
    assert nxt["earned"] == {"points": 10 + 10, "cashback": 50 + 25}
    view = await tier_view(client, operator, card)
    assert view is not None
    assert {k: v for k, v in view.items() if k != "since"} == {
        "code": "gold",
        "name": "Gold",
        "qualifying_spend": 61_000,
        "next_tier": None,
        "to_next_tier": None,
    }
    await ledger_ok(client, operator, engine)


async def test_purchases_of_one_batch_earn_at_the_tier_the_items_before_left(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    items = [
        {"type": "purchase", **purchase_body(card, amount)} for amount in (9_000, 2_000, 1_000)
    ]
    r = await client.post("/v1/batches", json={"items": items}, headers={**till, **idem()})
    assert r.status_code == 200, r.text
    results = [item["result"] for item in r.json()["items"]]
    assert [x["tier"] for x in results] == [
        {"code": "bronze", "upgraded_from": None},
        {"code": "silver", "upgraded_from": "bronze"},
        {"code": "silver", "upgraded_from": None},
    ]
    assert [x["applied"] for x in results] == [
        expected_applied(partner, 9_000, None),
        expected_applied(partner, 2_000, None),
        expected_applied(partner, 1_000, BY_CODE["silver"]),
    ]
    assert await spend_by_month(engine, card) == {this_month(): 12_000}
    assert (await stored_tier(engine, card))[0] == "silver"
    await ledger_ok(client, operator, engine)


# Replays and duplicates ----------------------------------------------------------------------


async def test_a_replayed_purchase_counts_its_spend_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    for amount in (9_000, 19):  # one posted, one too small to post
        body = purchase_body(card, amount)
        key = idem()
        first = await client.post("/v1/accruals", json=body, headers={**till, **key})
        again = await client.post("/v1/accruals", json=body, headers={**till, **key})
        assert first.status_code == (201 if amount > 19 else 200), first.text
        assert (again.status_code, again.content) == (first.status_code, first.content)
    # A posted receipt sent again under a new key is a duplicate, and adds nothing.
    body = purchase_body(card, 9_000)
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    dup = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert_problem(dup, 409, "duplicate_reference")
    assert await spend_by_month(engine, card) == {this_month(): 9_000 + 9_000}
    assert (await stored_tier(engine, card))[0] == "silver"
    await ledger_ok(client, operator, engine)


async def test_a_receipt_that_earned_nothing_never_qualifies_however_often_it_is_sent(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A receipt too small to earn posts no transaction, so nothing would stop the same
    reference from being sent again under a new Idempotency-Key: it does not qualify at all
    (only posted purchases do), so re-sending it cannot add spend or move the card up."""
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator, cashback_bps=0)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 9_950)
    body = purchase_body(card, 99, reference="R-small")
    for _ in range(3):  # 3 * 99 would cross silver's 10_000 if each counted
        r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["transaction_id"] is None
        assert answer["earned"] == {"points": 0, "cashback": 0}
        assert answer["tier"] == {"code": "bronze", "upgraded_from": None}
    assert await spend_by_month(engine, card) == {this_month(): 9_950}
    assert (await stored_tier(engine, card))[0] == "bronze"
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"], view["to_next_tier"]) == ("bronze", 9_950, 50)
    await ledger_ok(client, operator, engine)


async def test_a_purchase_with_nothing_eligible_still_answers_the_cards_tier(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    await buy(client, till, card, 12_000)
    answer = await buy(client, till, card, 500, redeemed_amount=500)
    assert (answer["eligible_amount"], answer["transaction_id"]) == (0, None)
    assert answer["tier"] == {"code": "silver", "upgraded_from": None}


# The bonus -----------------------------------------------------------------------------------


async def test_the_tier_bonus_is_exact_and_funded_by_the_operator(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """One tier for everyone (no moves), awkward rates: every answer, earnings row and entry
    is what the rules say, computed here independently."""
    member = {
        "code": "member",
        "name": "Member",
        "threshold": 0,
        "points_bonus_pct": 33,
        "cashback_bonus_bps": 333,
    }
    await set_ladder(client, operator, tiers=[member])
    partner, till = await partner_with_key(
        app,
        client,
        operator,
        earn_rate={"points": 7, "per_amount": 300},
        cashback_bps=275,
        excluded_categories=["tobacco"],
    )
    card = (await issue_card(client, operator))["card_number"]
    rng = random.Random(5)
    cases: list[tuple[int, dict[str, Any]]] = [
        (12_345, {}),  # 288.05 points -> 288, bonus 95.04 -> 95; 411.09 cents bonus -> 411
        (20, {}),  # earns nothing at all
        (31, {}),  # no points; 0.85 cents -> 0; bonus 1.03 cents -> 1
        (43, {}),  # 1.003 points -> 1, bonus 0.33 -> 0; cashback 1.18 -> 1, bonus 1.43 -> 1
        (
            999,
            {
                "lines": [
                    {"sku": "a", "category": "tobacco", "amount": 333},
                    {"sku": "b", "amount": 666},
                ],
                "redeemed_amount": 7,
            },
        ),
    ]
    cases += [(rng.randint(1, 200_000), {}) for _ in range(15)]
    points = cashback = 0
    for amount, extra in cases:
        answer = await buy(client, till, card, amount, **extra)
        eligible = amount
        if extra:
            eligible = 666 * (999 - 7) // 999
        assert answer["eligible_amount"] == eligible, (amount, answer)
        base_points = eligible * 7 // 300
        base_cashback = eligible * 275 // 10_000
        bonus_points = base_points * 33 // 100
        bonus_cashback = eligible * 333 // 10_000
        expected = [
            {
                "rule": "base",
                "rule_ref": partner["id"],
                "rule_version": 1,
                "points": base_points,
                "cashback": base_cashback,
            }
        ]
        if bonus_points or bonus_cashback:
            expected.append(
                {
                    "rule": "tier",
                    "rule_ref": "member",
                    "rule_version": 1,
                    "points": bonus_points,
                    "cashback": bonus_cashback,
                }
            )
        assert answer["applied"] == expected, (amount, answer)
        earned = {
            "points": base_points + bonus_points,
            "cashback": base_cashback + bonus_cashback,
        }
        assert answer["earned"] == earned, (amount, answer)
        assert answer["tier"] == {"code": "member", "upgraded_from": None}
        points += earned["points"]
        cashback += earned["cashback"]
        assert answer["balance"] == {"points": points, "cashback": cashback}
        if answer["transaction_id"] is None:
            assert earned == {"points": 0, "cashback": 0}
            continue
        assert await earnings_rows(engine, answer["transaction_id"]) == expected
        legs = {
            ("card", "points"): earned["points"],
            ("card", "cashback"): earned["cashback"],
            ("partner_issued", "points"): -base_points,
            ("partner_issued", "cashback"): -base_cashback,
            ("operator_issued", "points"): -bonus_points,
            ("operator_issued", "cashback"): -bonus_cashback,
        }
        assert await legs_by_kind(engine, answer["transaction_id"]) == {
            k: v for k, v in legs.items() if v
        }, amount
    await ledger_ok(client, operator, engine)


# The card view -------------------------------------------------------------------------------


async def test_the_card_view_shows_tier_spend_and_what_is_left_to_the_next(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    assert await tier_view(client, operator, card) == {
        "code": "bronze",
        "name": "Bronze",
        "since": None,  # never moved: no purchase yet
        "qualifying_spend": 0,
        "next_tier": "silver",
        "to_next_tier": 10_000,
    }
    # (amount, whether it posts and so qualifies, tier after, next tier, left to it)
    steps = [
        (4_000, True, "bronze", "silver", 6_000),
        (5_900, True, "bronze", "silver", 100),
        (19, False, "bronze", "silver", 100),  # earns nothing: posts nothing, counts nothing
        (100, True, "silver", "gold", 40_000),
        (40_000, True, "gold", None, None),
        (5, False, "gold", None, None),
        (500, True, "gold", None, None),
    ]
    spend = 0
    for amount, posts, code, next_tier, to_next in steps:
        answer = await buy(client, till, card, amount)
        assert (answer["transaction_id"] is not None) == posts, amount
        spend += amount if posts else 0
        tier, since = await stored_tier(engine, card)
        view = await tier_view(client, operator, card)
        assert view is not None
        shown = (view["code"], view["qualifying_spend"], view["next_tier"], view["to_next_tier"])
        assert shown == (code, spend, next_tier, to_next), amount
        assert view["name"] == BY_CODE[code]["name"]
        assert tier == code
        assert datetime.fromisoformat(view["since"]) == since
    # Spend that does not qualify: excluded lines and the part paid with points.
    _, till2 = await partner_with_key(app, client, operator, excluded_categories=["gift_cards"])
    await buy(
        client,
        till2,
        card,
        1_000,
        lines=[
            {"sku": "g", "category": "gift_cards", "amount": 600},
            {"sku": "b", "category": "books", "amount": 400},
        ],
        redeemed_amount=500,
    )
    view = await tier_view(client, operator, card)
    assert view is not None and view["qualifying_spend"] == spend + 200
    await ledger_ok(client, operator, engine)


async def test_a_card_whose_tier_a_new_ladder_dropped_stands_where_its_spend_reaches(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A card's tier code that a later ladder dropped: it stands where its spend reaches."""
    _, till, card = await tiered_setup(app, client, operator)
    await buy(client, till, card, 12_000)
    assert (await stored_tier(engine, card))[0] == "silver"
    await set_ladder(
        client,
        operator,
        tiers=[
            {"code": "basic", "name": "Basic", "threshold": 0},
            {"code": "plus", "name": "Plus", "threshold": 5_000, "points_bonus_pct": 20},
        ],
    )
    assert await tier_view(client, operator, card) == {
        "code": "plus",
        "name": "Plus",
        "since": None,
        "qualifying_spend": 12_000,
        "next_tier": None,
        "to_next_tier": None,
    }
    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "plus"
    assert await run_review(app) == 0


# The window ----------------------------------------------------------------------------------


async def test_spend_counts_over_the_window_months_this_one_included(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    await add_past_spend(engine, card, months_ago(12), 50_000)  # just outside 12 months
    await add_past_spend(engine, card, months_ago(11), 3_000)  # the oldest month inside
    await buy(client, till, card, 2_000)
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"]) == ("bronze", 5_000)

    # The window is the ladder's: a wider one counts the old month too.
    await set_ladder(client, operator, window_months=13)
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"]) == ("gold", 55_000)
    # One month: only this one.
    await set_ladder(client, operator, window_months=1)
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"]) == ("bronze", 2_000)

    # A purchase reaching silver with this month alone crosses; the old months never count.
    answer = await buy(client, till, card, 8_000)
    assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    await ledger_ok(client, operator, engine)


async def test_spend_that_leaves_the_window_moves_the_card_down_only_at_the_review(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    other = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 60_000)
    await buy(client, till, other, 12_000)
    gold_since = (await stored_tier(engine, card))[1]

    # A year on: this month's spend is out of the window, and the card is still gold...
    await age_spend(engine, card, 12)
    await add_past_spend(engine, card, months_ago(3), 12_500)
    view = await tier_view(client, operator, card)
    assert view is not None
    assert view["code"] == "gold"
    assert datetime.fromisoformat(view["since"]) == gold_since
    assert (view["qualifying_spend"], view["next_tier"], view["to_next_tier"]) == (
        12_500,
        None,
        None,
    )
    # ...and a purchase meanwhile still earns gold.
    answer = await buy(client, till, card, 100)
    assert answer["applied"] == expected_applied(partner, 100, BY_CODE["gold"])
    assert answer["tier"] == {"code": "gold", "upgraded_from": None}

    # The review moves it down to where its spend reaches (not lower), and nothing else.
    assert await run_review(app) == 1
    tier, since = await stored_tier(engine, card)
    assert tier == "silver"
    assert since is not None and gold_since is not None and since > gold_since
    assert (await stored_tier(engine, other))[0] == "silver"
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"], view["to_next_tier"]) == (
        "silver",
        12_600,
        50_000 - 12_600,
    )
    assert await run_review(app) == 0

    answer = await buy(client, till, card, 1_000)
    assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["silver"])
    await ledger_ok(client, operator, engine)


async def test_a_backdated_purchase_counts_in_its_own_utc_month(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # 30 minutes into this month in UTC, though the till's clock says last month.
    this = (start - timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%S")
    await buy(client, till, card, 1_000, occurred_at=this + "-02:00")
    # 30 minutes before this month in UTC, though the till's clock says this month.
    last = (start + timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M:%S")
    answer = await buy(client, till, card, 9_500, occurred_at=last + "+02:00")
    assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    assert await spend_by_month(engine, card) == {months_ago(1): 9_500, this_month(): 1_000}

    # A return takes from the purchase's month.
    await returned_ok(client, till, answer["transaction_id"], 2_000)
    assert await spend_by_month(engine, card) == {months_ago(1): 7_500, this_month(): 1_000}
    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    await ledger_ok(client, operator, engine)


async def test_a_purchase_backdated_out_of_the_window_does_not_move_the_card_up(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator, window_months=1)
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    answer = await buy(
        client, till, card, 60_000, occurred_at=(start - timedelta(hours=12)).isoformat()
    )
    assert await spend_by_month(engine, card) == {months_ago(1): 60_000}
    view = await tier_view(client, operator, card)
    assert view is not None and view["qualifying_spend"] == 0
    # The card's spend over the window is 0: it stays bronze.
    assert answer["tier"] == {"code": "bronze", "upgraded_from": None}
    assert (await stored_tier(engine, card))[0] == "bronze"
    assert view["code"] == "bronze"
    # Spend of this month still counts, from 0: reaching silver moves the card up.
    answer = await buy(client, till, card, 10_000)
    assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    view = await tier_view(client, operator, card)
    assert view is not None and (view["code"], view["qualifying_spend"]) == ("silver", 10_000)
    await ledger_ok(client, operator, engine)


# Returns -------------------------------------------------------------------------------------


async def test_a_return_reduces_spend_but_the_card_moves_down_only_at_the_review(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    crossing = await buy(client, till, card, 12_000)
    assert crossing["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    silver_since = (await stored_tier(engine, card))[1]

    body = await returned_ok(client, till, crossing["transaction_id"], 3_000)
    assert body["taken_back"] == {"points": 30, "cashback": 150}
    assert await spend_by_month(engine, card) == {this_month(): 9_000}
    assert await stored_tier(engine, card) == ("silver", silver_since)
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["qualifying_spend"], view["next_tier"], view["to_next_tier"]) == (
        "silver",
        9_000,
        "gold",
        41_000,
    )
    # Still silver until the review: the next purchase earns the bonus.
    answer = await buy(client, till, card, 500)
    assert answer["applied"] == expected_applied(partner, 500, BY_CODE["silver"])
    assert answer["tier"] == {"code": "silver", "upgraded_from": None}

    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    answer = await buy(client, till, card, 100)
    assert answer["applied"] == expected_applied(partner, 100, None)
    # Back over the threshold by a purchase: up again at once.
    answer = await buy(client, till, card, 400)
    assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    await ledger_ok(client, operator, engine)


async def test_returns_take_spend_back_by_the_eligible_share_rounded_down_in_total(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Spend taken back after returns totalling R of a purchase P, eligible E, is always
    floor(E * R / P): each return takes the difference."""
    _, till = await partner_with_key(app, client, operator, excluded_categories=["tobacco"])
    card = (await issue_card(client, operator))["card_number"]
    lines = [
        {"sku": "cig", "category": "tobacco", "amount": 333},
        {"sku": "bread", "category": "food", "amount": 666},
    ]
    answer = await buy(client, till, card, 999, lines=lines, redeemed_amount=7)
    eligible = 666 * 992 // 999
    assert answer["eligible_amount"] == eligible == 661
    returned = 0
    for amount in (1, 2, 250, 100, 3, 643):
        await returned_ok(client, till, answer["transaction_id"], amount)
        returned += amount
        left = eligible - eligible * returned // 999
        assert await spend_by_month(engine, card) == {this_month(): left}, returned
    assert returned == 999
    assert await spend_by_month(engine, card) == {this_month(): 0}
    await ledger_ok(client, operator, engine)


async def test_returning_the_purchase_that_earned_the_upgrade_then_the_review(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    crossing = await buy(client, till, card, 12_000)
    later = await buy(client, till, card, 2_000)
    assert later["applied"] == expected_applied(partner, 2_000, BY_CODE["silver"])

    body = await returned_ok(client, till, crossing["transaction_id"], 12_000)
    assert body["taken_back"] == crossing["earned"]
    assert body["balance"] == later["earned"]
    assert await spend_by_month(engine, card) == {this_month(): 2_000}
    # The card keeps the tier the purchase gave it until the review...
    view = await tier_view(client, operator, card)
    assert view is not None and (view["code"], view["qualifying_spend"]) == ("silver", 2_000)
    # ...what the later purchase earned at that tier stays earned...
    assert await earnings_rows(engine, later["transaction_id"]) == later["applied"]
    # ...and the review takes the tier away.
    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    await ledger_ok(client, operator, engine)


async def test_a_return_of_a_purchase_with_a_tier_bonus_takes_back_base_and_bonus(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    await buy(client, till, card, 12_000)
    bonus = await buy(client, till, card, 1_000)
    assert bonus["earned"] == {"points": 15, "cashback": 60}  # base 10/50, silver 5/10

    # A part: each leg is taken back in proportion, rounded down on its own, and goes back
    # to whoever funded it (base 10*350//1000 = 3 and 50*350//1000 = 17 to the partner,
    # bonus 5*350//1000 = 1 and 10*350//1000 = 3 to the operator).
    part = await returned_ok(client, till, bonus["transaction_id"], 350)
    assert part["taken_back"] == {"points": 4, "cashback": 20}
    assert await legs_by_kind(engine, str(part["transaction_id"])) == {
        ("card", "points"): -4,
        ("card", "cashback"): -20,
        ("partner_issued", "points"): 3,
        ("partner_issued", "cashback"): 17,
        ("operator_issued", "points"): 1,
        ("operator_issued", "cashback"): 3,
    }
    await ledger_ok(client, operator, engine)

    # The rest: together, exactly what each leg earned has gone back to its funder.
    body = await returned_ok(client, till, bonus["transaction_id"], 650)
    assert body["taken_back"] == {"points": 11, "cashback": 40}
    assert await legs_by_kind(engine, str(body["transaction_id"])) == {
        ("card", "points"): -11,
        ("card", "cashback"): -40,
        ("partner_issued", "points"): 10 - 3,
        ("partner_issued", "cashback"): 50 - 17,
        ("operator_issued", "points"): 5 - 1,
        ("operator_issued", "cashback"): 10 - 3,
    }
    await ledger_ok(client, operator, engine)


async def test_a_reversed_purchase_no_longer_counts_as_qualifying_spend(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    wrong = await buy(client, till, card, 12_000)
    assert wrong["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    r = await reverse(client, till, wrong["transaction_id"])
    assert r.status_code == 201, r.text
    await ledger_ok(client, operator, engine)
    assert await spend_by_month(engine, card) == {this_month(): 0}
    view = await tier_view(client, operator, card)
    assert view is not None and (view["code"], view["qualifying_spend"]) == ("silver", 0)
    # Like a return, it takes the tier away at the review, not at once.
    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    assert await run_review(app) == 0
    # The spend it had does not count towards the next crossing either.
    answer = await buy(client, till, card, 9_000)
    assert answer["tier"] == {"code": "bronze", "upgraded_from": None}
    await ledger_ok(client, operator, engine)


# A new ladder --------------------------------------------------------------------------------


async def test_a_new_ladder_applies_at_the_next_purchase_and_at_the_review(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    low = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 12_000)  # silver
    await buy(client, till, low, 6_000)  # bronze
    silver_since = (await stored_tier(engine, card))[1]

    v2 = [
        {"code": "bronze", "name": "Bronze", "threshold": 0},
        {"code": "silver", "name": "Silver", "threshold": 20_000, "points_bonus_pct": 20},
        {"code": "gold", "name": "Gold", "threshold": 5_000_000},
    ]
    assert (await set_ladder(client, operator, tiers=v2))["version"] == 2
    # Upgraded cards keep their tier until the review, at the new version's terms.
    view = await tier_view(client, operator, card)
    assert view is not None
    assert (view["code"], view["to_next_tier"]) == ("silver", 5_000_000 - 12_000)
    answer = await buy(client, till, card, 1_000)
    assert answer["applied"] == [
        base_rule(partner, 1_000),
        {"rule": "tier", "rule_ref": "silver", "rule_version": 2, "points": 2, "cashback": 0},
    ]
    assert answer["tier"] == {"code": "silver", "upgraded_from": None}
    assert await stored_tier(engine, card) == ("silver", silver_since)

    assert await run_review(app) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    assert (await stored_tier(engine, low))[0] == "bronze"

    # A ladder that lowers a threshold: a card that bought nothing since reaches it at the
    # review (and its view shows it at once).
    v3 = [{**v2[0]}, {**v2[1], "threshold": 5_000}, {**v2[2]}]
    await set_ladder(client, operator, tiers=v3)
    view = await tier_view(client, operator, low)
    assert view is not None and view["code"] == "silver"
    assert await run_review(app) == 2
    assert (await stored_tier(engine, low))[0] == "silver"
    assert (await stored_tier(engine, card))[0] == "silver"
    await ledger_ok(client, operator, engine)


# Replace and merge ---------------------------------------------------------------------------


async def test_replacing_a_card_carries_its_tier_and_spend(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till, card = await tiered_setup(app, client, operator)
    crossing = await buy(client, till, card, 60_000)
    assert crossing["tier"] == {"code": "gold", "upgraded_from": "bronze"}
    await add_past_spend(engine, card, months_ago(2), 10_000)
    before = await spend_by_month(engine, card)

    r = await client.post(f"/v1/cards/{card}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["new_card"]["tier"]["code"] == "gold"
    assert r.json()["new_card"]["tier"]["qualifying_spend"] == 70_000
    assert await spend_by_month(engine, new) == before
    assert await spend_by_month(engine, card) == {}
    assert (await stored_tier(engine, new))[0] == "gold"

    answer = await buy(client, till, new, 1_000)
    assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["gold"])

    # A return of the old card's purchase takes its spend from the new card.
    await returned_ok(client, till, crossing["transaction_id"], 60_000)
    assert await spend_by_month(engine, new) == {months_ago(2): 10_000, this_month(): 1_000}
    # The review skips the closed card (which kept its tier code): only the new one moves.
    assert await run_review(app) == 1
    assert (await stored_tier(engine, new))[0] == "silver"
    await ledger_ok(client, operator, engine)


async def _customer_cards(client: AsyncClient, operator: dict[str, str], n: int) -> list[str]:
    customer = f"cust-{uuid.uuid4()}"
    return [
        (await issue_card(client, operator, kind="personalized", customer_reference=customer))[
            "card_number"
        ]
        for _ in range(n)
    ]


async def _merge(client: AsyncClient, operator: dict[str, str], source: str, into: str) -> Any:
    r = await client.post(
        f"/v1/cards/{source}/merge",
        json={"into_card_number": into},
        headers={**operator, **idem()},
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_merging_adds_the_spends_and_keeps_the_higher_tier(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    await set_ladder(client, operator)
    gold, silver = await _customer_cards(client, operator, 2)
    await buy(client, till, gold, 60_000)
    await buy(client, till, silver, 12_000)
    await add_past_spend(engine, gold, months_ago(1), 1_000)
    await add_past_spend(engine, silver, months_ago(1), 2_000)

    # The gold card merged into the silver one: the silver one becomes gold.
    body = await _merge(client, operator, gold, silver)
    assert body["card"]["tier"]["code"] == "gold"
    assert body["card"]["tier"]["qualifying_spend"] == 75_000
    assert await spend_by_month(engine, silver) == {months_ago(1): 3_000, this_month(): 72_000}
    assert await spend_by_month(engine, gold) == {}
    assert (await stored_tier(engine, silver))[0] == "gold"
    answer = await buy(client, till, silver, 1_000)
    assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["gold"])

    # The other way round: the higher tier, the target's, stays.
    high, low = await _customer_cards(client, operator, 2)
    await buy(client, till, high, 60_000)
    await buy(client, till, low, 12_000)
    high_since = await stored_tier(engine, high)
    await _merge(client, operator, low, high)
    assert await stored_tier(engine, high) == high_since
    assert await spend_by_month(engine, high) == {this_month(): 72_000}

    # Two bronze cards whose spends together reach silver stand at silver at once.
    a, b = await _customer_cards(client, operator, 2)
    await buy(client, till, a, 6_000)
    await buy(client, till, b, 6_000)
    body = await _merge(client, operator, a, b)
    assert body["card"]["tier"]["code"] == "silver"
    answer = await buy(client, till, b, 1_000)
    assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["silver"])
    assert (await stored_tier(engine, b))[0] == "silver"

    # A card with a tier merged into one that has none yet (no purchase since the ladder).
    c, d = await _customer_cards(client, operator, 2)
    await buy(client, till, c, 12_000)
    await _merge(client, operator, c, d)
    assert (await stored_tier(engine, d))[0] == "silver"
    await ledger_ok(client, operator, engine)


# The review ----------------------------------------------------------------------------------


async def test_the_review_without_a_ladder_does_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 50_000)
    assert await run_review(app) == 0
    assert await stored_tier(engine, card) == (None, None)


async def test_the_review_pages_through_many_cards(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    await set_ladder(client, operator)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(7)]
    for i, card in enumerate(cards):
        await buy(client, till, card, 12_000 if i % 2 else 60_000)
        await age_spend(engine, card, 12)
    assert await review(app.state.engine, app.state.program, page=2) == 7
    assert {(await stored_tier(engine, c))[0] for c in cards} == {"bronze"}
    assert await review(app.state.engine, app.state.program, page=2) == 0


async def test_the_tiers_command_reviews_every_card(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    _, till, card = await tiered_setup(app, client, operator)
    other = (await issue_card(client, operator))["card_number"]
    kept = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 60_000)
    await buy(client, till, other, 12_000)
    await buy(client, till, kept, 12_000)
    await age_spend(engine, card, 12)
    await age_spend(engine, other, 12)

    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["tiers"],
            env={"DATABASE_URL": database_url, "PROGRAM_CURRENCY": "EUR"},
            catch_exceptions=False,
        )
        return result.exit_code, result.output

    get_settings.cache_clear()  # the CLI reads DATABASE_URL from its environment
    try:
        assert await asyncio.to_thread(invoke) == (0, "2 cards moved tier\n")
        assert await asyncio.to_thread(invoke) == (0, "0 cards moved tier\n")
    finally:
        get_settings.cache_clear()
    assert [(await stored_tier(engine, c))[0] for c in (card, other, kept)] == [
        "bronze",
        "bronze",
        "silver",
    ]
    await ledger_ok(client, operator, engine)
