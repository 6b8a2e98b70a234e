"""Partners' earn rules over HTTP: versions (PUT /v1/partners/{id}/earn-rule, GET .../earn-rules),
new rates for new purchases only, basket lines in excluded categories or SKUs, the part of a
purchase paid with points (redeemed_amount), and what each accrual records of the rules that
applied (its answer's `applied`, the `earnings` table, `transactions.eligible_amount`).

What a purchase earns is computed here independently of app/rules: eligible is the earning
lines' total (or the amount without lines) times (amount - redeemed) / amount, rounded down;
points and cashback are the eligible amount at the partner's rates, rounded down.
"""

import random
import uuid
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import create_partner, partner_with_key
from tests.ledger.test_returns import assert_problem, ledger_ok, returned_ok
from tests.rules.test_tiers import (
    buy,
    earnings_rows,
    legs_by_kind,
    purchase_body,
    set_ladder,
    spend_by_month,
    this_month,
)


def eligible_of(amount: int, lines: list[dict[str, Any]] | None, redeemed: int, rule: Any) -> int:
    """The eligible amount, from the definition (Fraction, then floor)."""
    if lines is None:
        earning = amount
    else:
        earning = sum(
            line["amount"]
            for line in lines
            if line["sku"] not in rule["excluded_skus"]
            and line.get("category") not in rule["excluded_categories"]
        )
    exact = Fraction(earning) * Fraction(amount - redeemed, amount)
    return int(exact)  # floor: both non-negative


def base_of(eligible: int, rule: dict[str, Any]) -> tuple[int, int]:
    rate = rule["earn_rate"]
    return (
        int(Fraction(eligible * rate["points"], rate["per_amount"])),
        int(Fraction(eligible * rule["cashback_bps"], 10_000)),
    )


async def rules_history(
    client: AsyncClient, operator: dict[str, str], partner_id: str
) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/partners/{partner_id}/earn-rules", headers=operator)
    assert r.status_code == 200, r.text
    rules: list[dict[str, Any]] = r.json()
    return rules


async def new_rule(
    client: AsyncClient, operator: dict[str, str], partner_id: str, **rule: Any
) -> dict[str, Any]:
    r = await client.put(f"/v1/partners/{partner_id}/earn-rule", json=rule, headers=operator)
    assert r.status_code == 200, r.text
    partner: dict[str, Any] = r.json()
    return partner


async def stored_eligible(engine: AsyncEngine, transaction_id: str) -> int | None:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT eligible_amount FROM transactions WHERE id = :t"),
                {"t": transaction_id},
            )
        ).scalar_one()
    return None if value is None else int(value)


# Versions ------------------------------------------------------------------------------------


async def test_earn_rules_are_versioned_and_listed_newest_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(
        client,
        operator,
        earn_rate={"points": 1, "per_amount": 100},
        cashback_bps=500,
        excluded_categories=["tobacco", "gift_cards"],
        excluded_skus=["LOTTO"],
    )
    other = await create_partner(client, operator)
    assert partner["earn_rule_version"] == 1
    assert partner["excluded_categories"] == ["tobacco", "gift_cards"]
    assert partner["excluded_skus"] == ["LOTTO"]
    assert other["excluded_categories"] == [] and other["excluded_skus"] == []
    [v1] = await rules_history(client, operator, partner["id"])
    assert {k: v for k, v in v1.items() if k != "created_at"} == {
        "version": 1,
        "earn_rate": {"points": 1, "per_amount": 100},
        "cashback_bps": 500,
        "excluded_categories": ["tobacco", "gift_cards"],
        "excluded_skus": ["LOTTO"],
        "return_window_days": 0,
    }

    changed = await new_rule(
        client,
        operator,
        partner["id"],
        earn_rate={"points": 3, "per_amount": 250},
        cashback_bps=125,
        excluded_categories=["alcohol"],
        excluded_skus=[],
        return_window_days=14,
    )
    assert changed == {
        **partner,
        "earn_rate": {"points": 3, "per_amount": 250},
        "cashback_bps": 125,
        "earn_rule_version": 2,
        "excluded_categories": ["alcohol"],
        "excluded_skus": [],
        "return_window_days": 14,
    }
    # Defaults: no cashback, no exclusions, no return window.
    third = await new_rule(
        client, operator, partner["id"], earn_rate={"points": 2, "per_amount": 100}
    )
    assert (third["earn_rule_version"], third["cashback_bps"]) == (3, 0)
    assert (third["excluded_categories"], third["excluded_skus"]) == ([], [])
    assert third["return_window_days"] == 0

    history = await rules_history(client, operator, partner["id"])
    assert [r["version"] for r in history] == [3, 2, 1]
    assert history[2] == v1
    assert history[1]["earn_rate"] == {"points": 3, "per_amount": 250}
    assert history[1]["excluded_categories"] == ["alcohol"]
    assert history[1]["return_window_days"] == 14
    assert history[0]["earn_rate"] == {"points": 2, "per_amount": 100}
    assert history[0]["created_at"] >= history[1]["created_at"] >= history[2]["created_at"]

    r = await client.get(f"/v1/partners/{partner['id']}", headers=operator)
    assert r.json() == third
    # The other partner's rule did not move.
    assert [r["version"] for r in await rules_history(client, operator, other["id"])] == [1]
    r = await client.get(f"/v1/partners/{other['id']}", headers=operator)
    assert r.json() == other
    await ledger_ok(client, operator, engine)


async def test_earn_rules_of_an_unknown_partner_or_for_a_partner_key_are_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    rule = {"earn_rate": {"points": 5, "per_amount": 100}}
    unknown = uuid.uuid4()
    r = await client.put(f"/v1/partners/{unknown}/earn-rule", json=rule, headers=operator)
    assert_problem(r, 404, "partner_not_found")
    assert_problem(
        await client.get(f"/v1/partners/{unknown}/earn-rules", headers=operator),
        404,
        "partner_not_found",
    )
    # A partner key may not change, nor read, even its own partner's rule.
    r = await client.put(f"/v1/partners/{partner['id']}/earn-rule", json=rule, headers=till)
    assert_problem(r, 403, "forbidden")
    r = await client.get(f"/v1/partners/{partner['id']}/earn-rules", headers=till)
    assert_problem(r, 403, "forbidden")
    r = await client.put(f"/v1/partners/{partner['id']}/earn-rule", json=rule)
    assert_problem(r, 401, "unauthorized")

    assert [r["version"] for r in await rules_history(client, operator, partner["id"])] == [1]
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM earn_rules"))).scalar_one() == 1


# New rates, new purchases --------------------------------------------------------------------


async def test_a_new_rule_applies_to_new_purchases_only_and_returns_keep_the_old_terms(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    lines = [
        {"sku": "cig", "category": "tobacco", "amount": 4_000},
        {"sku": "bread", "category": "food", "amount": 6_000},
    ]
    old = await buy(client, till, card, 10_000, lines=lines)
    assert old["eligible_amount"] == 10_000  # v1 excludes nothing
    assert old["applied"] == [
        {
            "rule": "base",
            "rule_ref": partner["id"],
            "rule_version": 1,
            "points": 100,
            "cashback": 500,
        }
    ]

    await new_rule(
        client,
        operator,
        partner["id"],
        earn_rate={"points": 3, "per_amount": 100},
        cashback_bps=1_000,
        excluded_categories=["tobacco"],
    )
    new = await buy(client, till, card, 10_000, lines=lines)
    assert new["eligible_amount"] == 6_000
    assert new["applied"] == [
        {
            "rule": "base",
            "rule_ref": partner["id"],
            "rule_version": 2,
            "points": 180,
            "cashback": 600,
        }
    ]
    # What the first purchase earned is as it was.
    assert await earnings_rows(engine, old["transaction_id"]) == old["applied"]
    assert await stored_eligible(engine, old["transaction_id"]) == 10_000
    assert await stored_eligible(engine, new["transaction_id"]) == 6_000

    # Returns take back what each purchase earned by its own rule.
    body = await returned_ok(client, till, old["transaction_id"], 2_500)
    assert body["taken_back"] == {"points": 25, "cashback": 125}
    body = await returned_ok(client, till, old["transaction_id"], 7_500)
    assert body["taken_back"] == {"points": 75, "cashback": 375}
    body = await returned_ok(client, till, new["transaction_id"], 3_333)
    assert body["taken_back"] == {
        "points": 180 * 3_333 // 10_000,
        "cashback": 600 * 3_333 // 10_000,
    }
    # And the qualifying spend they take back is each purchase's own eligible share.
    assert await spend_by_month(engine, card) == {
        this_month(): 10_000 - 10_000 + 6_000 - 6_000 * 3_333 // 10_000
    }
    await ledger_ok(client, operator, engine)


async def test_a_rule_changed_between_postings_of_one_card_is_read_fresh_each_time(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    rates = [(1, 100, 500), (7, 300, 275), (0, 1, 0), (1_000_000, 10**12, 10_000)]
    for version, (points, per, bps) in enumerate(rates, start=2):
        await new_rule(
            client,
            operator,
            partner["id"],
            earn_rate={"points": points, "per_amount": per},
            cashback_bps=bps,
        )
        answer = await buy(client, till, card, 12_345)
        assert answer["applied"] == [
            {
                "rule": "base",
                "rule_ref": partner["id"],
                "rule_version": version,
                "points": 12_345 * points // per,
                "cashback": 12_345 * bps // 10_000,
            }
        ]
    await ledger_ok(client, operator, engine)


# Baskets -------------------------------------------------------------------------------------


async def test_lines_in_excluded_categories_or_skus_earn_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(
        app,
        client,
        operator,
        excluded_categories=["gift_cards", "tobacco"],
        excluded_skus=["LOTTO-1"],
    )
    card = (await issue_card(client, operator))["card_number"]
    lines = [
        {"sku": "MILK", "category": "groceries", "amount": 4_000},
        {"sku": "GC-50", "category": "gift_cards", "amount": 5_000},
        {"sku": "LOTTO-1", "category": "groceries", "amount": 1_000},  # excluded by SKU
        {"sku": "PEN", "amount": 2_345},  # no category: earns
        {"sku": "FREEBIE", "category": "tobacco", "amount": 0},
        {"sku": "lotto-1", "category": "Gift_Cards", "amount": 55},  # other spellings earn
    ]
    answer = await buy(client, till, card, 12_400, lines=lines)
    assert answer["eligible_amount"] == 4_000 + 2_345 + 55
    assert answer["earned"] == {"points": 64, "cashback": 320}
    assert answer["applied"] == [
        {
            "rule": "base",
            "rule_ref": partner["id"],
            "rule_version": 1,
            "points": 64,
            "cashback": 320,
        }
    ]
    assert await stored_eligible(engine, answer["transaction_id"]) == 6_400
    assert await earnings_rows(engine, answer["transaction_id"]) == answer["applied"]

    # A basket of excluded lines only earns nothing: nothing posted, nothing qualifies.
    before = await spend_by_month(engine, card)
    answer = await buy(
        client,
        till,
        card,
        6_000,
        lines=[
            {"sku": "GC-50", "category": "gift_cards", "amount": 5_000},
            {"sku": "LOTTO-1", "amount": 1_000},
        ],
    )
    assert answer["transaction_id"] is None
    assert (answer["eligible_amount"], answer["earned"]) == (0, {"points": 0, "cashback": 0})
    assert await spend_by_month(engine, card) == before
    # The same basket without lines earns on all of it.
    answer = await buy(client, till, card, 6_000)
    assert (answer["eligible_amount"], answer["earned"]) == (6_000, {"points": 60, "cashback": 300})
    await ledger_ok(client, operator, engine)


async def test_the_part_paid_with_points_earns_nothing_in_proportion(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 10_000, redeemed_amount=2_500)
    assert (answer["eligible_amount"], answer["earned"]) == (7_500, {"points": 75, "cashback": 375})
    answer = await buy(client, till, card, 10_000, redeemed_amount=0)
    assert (answer["eligible_amount"], answer["earned"]) == (
        10_000,
        {"points": 100, "cashback": 500},
    )
    # 3 cents, 1 of them paid with points: 2 are eligible but earn nothing, so nothing is
    # posted, and only posted purchases qualify (a receipt that leaves no transaction could
    # otherwise count again each time it is sent).
    answer = await buy(client, till, card, 3, redeemed_amount=1)
    assert answer["eligible_amount"] == 2
    assert (answer["transaction_id"], answer["earned"]) == (None, {"points": 0, "cashback": 0})
    assert await spend_by_month(engine, card) == {this_month(): 10_000 + 7_500}
    # Paid entirely with points: nothing earned, nothing posted, nothing qualifies.
    before = await spend_by_month(engine, card)
    answer = await buy(client, till, card, 10_000, redeemed_amount=10_000)
    assert answer["transaction_id"] is None
    assert (answer["eligible_amount"], answer["earned"]) == (0, {"points": 0, "cashback": 0})
    assert await spend_by_month(engine, card) == before == {this_month(): 10_000 + 7_500}
    await ledger_ok(client, operator, engine)


@pytest.mark.parametrize(
    ("amount", "lines", "redeemed", "eligible"),
    [
        # earning 666 of 999, 992/999 of it: 661.33 -> 661
        (999, [("T", "tobacco", 333), ("B", "food", 666)], 7, 661),
        # earning 1 of 3, paid 2: 1/3 -> 0
        (3, [("B", "food", 1), ("T", "tobacco", 2)], 2, 0),
        # earning 2 of 3, paid 1: 4/3 -> 1
        (3, [("B", "food", 2), ("T", "tobacco", 1)], 1, 1),
        # all earning, paid all but 1 cent: 10^12 * 1 / 10^12
        (10**12, [("B", "food", 10**12)], 10**12 - 1, 1),
        # an excluded SKU in an earning category; (10^12 - 1)^2 / 10^12 -> 10^12 - 2
        (10**12, [("LOTTO", "food", 1), ("B", None, 10**12 - 1)], 1, 10**12 - 2),
        # zero lines and exclusions everywhere
        (7, [("B", "food", 0), ("T", "tobacco", 7)], 0, 0),
        (7, [("B", "food", 7), ("T", "tobacco", 0)], 6, 1),
    ],
)
async def test_lines_and_the_part_paid_with_points_round_down_together(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    amount: int,
    lines: list[tuple[str, str | None, int]],
    redeemed: int,
    eligible: int,
) -> None:
    rule = {
        "earn_rate": {"points": 7, "per_amount": 300},
        "cashback_bps": 275,
        "excluded_categories": ["tobacco"],
        "excluded_skus": ["LOTTO"],
    }
    partner, till = await partner_with_key(app, client, operator, **rule)
    card = (await issue_card(client, operator))["card_number"]
    basket = [
        {"sku": sku, "amount": value, **({"category": cat} if cat else {})}
        for sku, cat, value in lines
    ]
    assert eligible_of(amount, basket, redeemed, rule) == eligible
    answer = await buy(client, till, card, amount, lines=basket, redeemed_amount=redeemed)
    points, cashback = base_of(eligible, rule)
    assert answer["eligible_amount"] == eligible
    assert answer["earned"] == {"points": points, "cashback": cashback}
    assert answer["applied"] == [
        {
            "rule": "base",
            "rule_ref": partner["id"],
            "rule_version": 1,
            "points": points,
            "cashback": cashback,
        }
    ]
    posted = answer["transaction_id"] is not None
    assert await spend_by_month(engine, card) == ({this_month(): eligible} if posted else {})
    if answer["transaction_id"] is not None:
        assert await stored_eligible(engine, answer["transaction_id"]) == eligible
    await ledger_ok(client, operator, engine)


async def test_random_baskets_earn_what_the_rules_say_rule_by_rule(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Random baskets, random rule versions and a tier bonus: every answer's `applied` sums
    to `earned`, the earnings rows are the answer's `applied`, the entries are what they say
    (base from the partner, bonus from the operator), and the eligible amounts are stored."""
    member = {
        "code": "member",
        "name": "Member",
        "threshold": 0,
        "points_bonus_pct": 25,
        "cashback_bonus_bps": 50,
    }
    await set_ladder(client, operator, tiers=[member])
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    rng = random.Random(20261123)
    categories = ["food", "tobacco", "gift_cards", "books", None]
    skus = ["A", "B", "C", "LOTTO", "GC"]
    rule: dict[str, Any] = {}
    version = 1
    balance = {"points": 0, "cashback": 0}
    spend = 0
    for i in range(40):
        if i % 8 == 0:
            rule = {
                "earn_rate": {"points": rng.randint(0, 9), "per_amount": rng.randint(1, 999)},
                "cashback_bps": rng.randint(0, 1_000),
                "excluded_categories": rng.sample(categories[:4], rng.randint(0, 2)),
                "excluded_skus": rng.sample(skus, rng.randint(0, 2)),
            }
            version = (await new_rule(client, operator, partner["id"], **rule))["earn_rule_version"]
        basket: list[dict[str, Any]] | None = None
        if rng.random() < 0.8:
            basket = []
            for _ in range(rng.randint(1, 6)):
                line: dict[str, Any] = {"sku": rng.choice(skus), "amount": rng.randint(0, 5_000)}
                category = rng.choice(categories)
                if category is not None:
                    line["category"] = category
                basket.append(line)
            amount = sum(line["amount"] for line in basket)
            if amount == 0:
                basket[0]["amount"] = amount = 1
        else:
            amount = rng.randint(1, 20_000)
        redeemed = rng.choice([0, 0, rng.randint(0, amount), amount])
        extra: dict[str, Any] = {"redeemed_amount": redeemed}
        if basket is not None:
            extra["lines"] = basket
        answer = await buy(client, till, card, amount, **extra)

        eligible = eligible_of(amount, basket, redeemed, rule)
        points, cashback = base_of(eligible, rule)
        expected = [
            {
                "rule": "base",
                "rule_ref": partner["id"],
                "rule_version": version,
                "points": points,
                "cashback": cashback,
            }
        ]
        bonus = (points * 25 // 100, eligible * 50 // 10_000)
        if eligible and any(bonus):
            expected.append(
                {
                    "rule": "tier",
                    "rule_ref": "member",
                    "rule_version": 1,
                    "points": bonus[0],
                    "cashback": bonus[1],
                }
            )
        context = (i, amount, basket, redeemed, rule, answer)
        assert answer["eligible_amount"] == eligible, context
        assert answer["applied"] == expected, context
        earned = {
            "points": sum(r["points"] for r in expected),
            "cashback": sum(r["cashback"] for r in expected),
        }
        assert answer["earned"] == earned, context
        balance = {k: balance[k] + earned[k] for k in balance}
        assert answer["balance"] == balance, context
        if answer["transaction_id"] is None:
            assert earned == {"points": 0, "cashback": 0}, context
            continue  # nothing posted: it does not qualify either
        spend += eligible  # only posted purchases count as qualifying spend
        assert await earnings_rows(engine, answer["transaction_id"]) == expected, context
        assert await stored_eligible(engine, answer["transaction_id"]) == eligible
        legs = {
            ("card", "points"): earned["points"],
            ("card", "cashback"): earned["cashback"],
            ("partner_issued", "points"): -points,
            ("partner_issued", "cashback"): -cashback,
            ("operator_issued", "points"): -bonus[0],
            ("operator_issued", "cashback"): -bonus[1],
        }
        assert await legs_by_kind(engine, answer["transaction_id"]) == {
            k: v for k, v in legs.items() if v
        }, context
    assert await spend_by_month(engine, card) == ({this_month(): spend} if spend else {})

    # The table agrees with the ledger: per asset, the earnings rows of all accruals add up
    # to what the cards hold.
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("""
                    SELECT (SELECT coalesce(sum(points), 0) FROM earnings),
                           (SELECT coalesce(sum(cashback), 0) FROM earnings)
                """)
            )
        ).one()
    assert (int(row[0]), int(row[1])) == (balance["points"], balance["cashback"])
    await ledger_ok(client, operator, engine)


async def test_an_operator_key_posting_for_a_partner_earns_by_that_partners_rule(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, _ = await partner_with_key(app, client, operator, excluded_skus=["X"])
    await new_rule(
        client,
        operator,
        partner["id"],
        earn_rate={"points": 2, "per_amount": 100},
        excluded_skus=["Y"],
    )
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(
        client,
        operator,
        card,
        1_000,
        partner_id=partner["id"],
        lines=[{"sku": "X", "amount": 400}, {"sku": "Y", "amount": 600}],
    )
    assert answer["partner_id"] == partner["id"]
    assert answer["eligible_amount"] == 400
    assert answer["applied"][0]["rule_version"] == 2
    assert answer["earned"] == {"points": 8, "cashback": 0}
    await ledger_ok(client, operator, engine)


# The two routes ------------------------------------------------------------------------------

# Each card has its own number and balance; everything else must agree.
VARYING = {"transaction_id", "occurred_at", "posted_at", "reference", "card_number"}


@pytest.fixture
async def plain_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """The app without the hot routes: FastAPI's own POST /v1/accruals."""
    plain = create_app(settings, hot_routes=False)
    async with plain.router.lifespan_context(plain):
        transport = ASGITransport(app=plain)
        async with AsyncClient(transport=transport, base_url="http://ledger.test") as c:
            yield c


async def test_the_hot_and_fastapi_routes_earn_alike(
    app: FastAPI,
    client: AsyncClient,
    plain_client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    await set_ladder(
        client,
        operator,
        tiers=[
            {"code": "bronze", "name": "Bronze", "threshold": 0, "points_bonus_pct": 10},
            {
                "code": "silver",
                "name": "Silver",
                "threshold": 5_000,
                "points_bonus_pct": 50,
                "cashback_bonus_bps": 75,
            },
        ],
    )
    _, till = await partner_with_key(
        app,
        client,
        operator,
        earn_rate={"points": 3, "per_amount": 200},
        cashback_bps=333,
        excluded_categories=["tobacco"],
        excluded_skus=["LOTTO"],
    )
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(2)]
    lines = [
        {"sku": "A", "category": "food", "amount": 1_234},
        {"sku": "LOTTO", "category": "food", "amount": 500},
        {"sku": "C", "category": "tobacco", "amount": 777},
        {"sku": "D", "amount": 1_489},
    ]
    bodies: list[Any] = [
        {"amount": 4_000, "lines": lines, "redeemed_amount": 333},
        {"amount": 19},  # too small to earn
        {"amount": 3_000},  # crosses into silver
        {"amount": 4_000, "lines": lines},
        {"amount": 999, "redeemed_amount": 999},
        {"amount": 4_000, "lines": lines[:3]},  # lines that do not add up
        {"amount": 10, "redeemed_amount": 11},
        {"amount": 4_000, "lines": []},
    ]
    for body in bodies:
        answers = []
        for target, card in zip((client, plain_client), cards, strict=True):
            r = await target.post(
                "/v1/accruals",
                json=purchase_body(card, **body),
                headers={**till, **idem()},
            )
            parsed = r.json()
            if isinstance(parsed, dict):
                parsed = {k: v for k, v in parsed.items() if k not in VARYING}
            answers.append((r.status_code, r.headers["content-type"], parsed))
        assert answers[0] == answers[1], (body, answers)
    assert await spend_by_month(engine, cards[0]) == await spend_by_month(engine, cards[1])
    await ledger_ok(client, operator, engine)
