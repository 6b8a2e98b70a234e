"""Tiers and earn rules under real concurrency: requests gathered over the client reach the
app's connection pool (and the group-commit batcher) at once, and only the card's account
locks order them.

Whatever the order, the outcome must be that of some serial order: each purchase earns at the
tier the card had when it was applied (the purchases before it in that order), the card ends at
the tier its spend reaches, and no upgrade is lost to a review running meanwhile. The serial
order is read back from the transactions' ids (uuid7, monotonic in the process, made when the
engine applies each posting under the card's lock).

The deterministic interleavings hold the card's account locks in a transaction of the test and
queue requests behind it, in a known order (tests/ledger/test_return_races.py).
"""

import asyncio
import json
import random
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.rules.review import review
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import create_partner, partner_with_key
from tests.ledger.test_return_races import after, queued_behind_lock
from tests.ledger.test_returns import ledger_ok, returned_ok
from tests.rules.test_tiers import (
    BY_CODE,
    LADDER,
    age_spend,
    buy,
    expected_applied,
    purchase_body,
    set_ladder,
    spend_by_month,
    stored_tier,
    this_month,
)

pytestmark = pytest.mark.concurrency


def reached(spend: int) -> str:
    codes: list[str] = [t["code"] for t in LADDER if spend >= t["threshold"]]
    return codes[-1]


def post_purchase(
    client: AsyncClient, till: dict[str, str], card: str, amount: int, **extra: Any
) -> Any:
    """Un-awaited, so tests can gather many."""
    return client.post(
        "/v1/accruals", json=purchase_body(card, amount, **extra), headers={**till, **idem()}
    )


async def posted_in_order(engine: AsyncEngine, card: str) -> list[dict[str, Any]]:
    """The card's accruals in the order the engine applied them, each with its earnings."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("""
                SELECT t.id, t.eligible_amount,
                       coalesce(json_agg(json_build_object(
                           'rule', e.rule, 'rule_ref', e.rule_ref,
                           'rule_version', e.rule_version, 'points', e.points,
                           'cashback', e.cashback)
                           ORDER BY array_position(ARRAY['base', 'tier', 'campaign'], e.rule),
                                    e.rule_ref)
                         FILTER (WHERE e.rule IS NOT NULL), '[]') AS applied
                FROM transactions t JOIN cards c ON c.id = t.card_id
                LEFT JOIN earnings e ON e.transaction_id = t.id
                WHERE c.card_number = :n AND t.type = 'accrual'
                GROUP BY t.id ORDER BY t.id
            """),
            {"n": card},
        )
        return [
            {
                "id": str(r.id),
                "eligible": int(r.eligible_amount),
                "applied": json.loads(r.applied) if isinstance(r.applied, str) else r.applied,
            }
            for r in rows
        ]


# Purchases racing over a threshold -----------------------------------------------------------


async def test_concurrent_purchases_crossing_thresholds_earn_as_in_a_serial_order(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await set_ladder(client, operator)
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    rng = random.Random(7)
    amounts = [rng.randint(500, 4_000) for _ in range(32)]
    total = sum(amounts)
    assert total > 50_000  # crosses silver and gold

    answers: list[Response] = await asyncio.gather(
        *(
            after(0.004 * (i % 8), post_purchase(client, till, card, amount))
            for i, amount in enumerate(amounts)
        )
    )
    assert [r.status_code for r in answers] == [201] * len(amounts), [r.text for r in answers]
    by_id = {r.json()["transaction_id"]: r.json() for r in answers}

    # The serial order the engine applied them in: each earned at the tier before it.
    spend = 0
    bonus = {"points": 0, "cashback": 0}
    upgrades = []
    for posted in await posted_in_order(engine, card):
        tier_before = reached(spend)
        spend += posted["eligible"]
        applied = expected_applied(partner, posted["eligible"], BY_CODE[tier_before])
        assert posted["applied"] == applied, (spend, posted)
        answer = by_id[posted["id"]]
        assert answer["applied"] == applied
        moved = reached(spend) != tier_before
        assert answer["tier"] == {
            "code": reached(spend),
            "upgraded_from": tier_before if moved else None,
        }, (spend, answer)
        if moved:
            upgrades.append((tier_before, reached(spend)))
        for row in applied[1:]:
            bonus["points"] += row["points"]
            bonus["cashback"] += row["cashback"]
    assert spend == total
    assert upgrades in ([("bronze", "silver"), ("silver", "gold")], [("bronze", "gold")])
    # Exactly one answer per move up says so.
    assert sorted(
        (a["tier"]["upgraded_from"], a["tier"]["code"])
        for a in by_id.values()
        if a["tier"]["upgraded_from"]
    ) == sorted(upgrades)

    assert await spend_by_month(engine, card) == {this_month(): total}
    assert (await stored_tier(engine, card))[0] == "gold"
    async with engine.connect() as conn:
        funded = (
            await conn.execute(
                text("""
                    SELECT e.asset, -sum(e.amount) FROM entries e
                    JOIN accounts a ON a.id = e.account_id AND a.kind = 'operator_issued'
                    GROUP BY e.asset
                """)
            )
        ).all()
    assert {asset: int(v) for asset, v in funded} == {k: v for k, v in bonus.items() if v}
    await ledger_ok(client, operator, engine)


async def test_a_receipt_that_earned_nothing_sent_at_once_under_many_keys_never_qualifies(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A receipt too small to earn posts nothing, so the same reference may be answered many
    times; racing purchases that post, the copies add no spend and cannot move the card up."""
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator, cashback_bps=0)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 9_500)
    small = purchase_body(card, 99, reference="R-small")  # 8 copies would cross silver
    copies = [client.post("/v1/accruals", json=small, headers={**till, **idem()}) for _ in range(8)]
    work: list[Any] = [*copies, *(post_purchase(client, till, card, 200) for _ in range(2))]
    random.Random(9).shuffle(work)
    answers: list[Response] = await asyncio.gather(*work)
    by_status = sorted(r.status_code for r in answers)
    assert by_status == [200] * 8 + [201] * 2, [r.text for r in answers]
    for r in answers:
        assert (r.json()["transaction_id"] is None) == (r.status_code == 200), r.text
        assert r.json()["tier"] == {"code": "bronze", "upgraded_from": None}, r.text
    assert await spend_by_month(engine, card) == {this_month(): 9_900}
    assert (await stored_tier(engine, card))[0] == "bronze"
    # The next purchase that posts counts from 9_900.
    answer = await buy(client, till, card, 100)
    assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    await ledger_ok(client, operator, engine)


async def test_concurrent_purchases_on_many_cards_each_move_up_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(6)]
    requests = [post_purchase(client, till, card, 2_500) for card in cards for _ in range(5)]
    random.Random(3).shuffle(requests)
    answers: list[Response] = await asyncio.gather(*requests)
    assert {r.status_code for r in answers} == {201}
    for card in cards:
        mine = [r.json() for r in answers if r.json()["card_number"] == card]
        assert sum(1 for a in mine if a["tier"]["upgraded_from"] == "bronze") == 1
        assert sum(1 for a in mine if a["tier"]["code"] == "silver") == 2  # 10_000 and 12_500
        assert sum(len(a["applied"]) == 2 for a in mine) == 1  # only the last earns silver
        assert await spend_by_month(engine, card) == {this_month(): 12_500}
        assert (await stored_tier(engine, card))[0] == "silver"
    await ledger_ok(client, operator, engine)


# The review racing purchases -----------------------------------------------------------------


async def test_the_review_racing_purchases_never_loses_an_upgrade(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await set_ladder(client, operator)
    partner, till = await partner_with_key(app, client, operator)
    rising = [(await issue_card(client, operator))["card_number"] for _ in range(4)]
    falling = [(await issue_card(client, operator))["card_number"] for _ in range(3)]
    for card in rising:
        await buy(client, till, card, 9_000)  # bronze, 1_000 short of silver
    for card in falling:
        await buy(client, till, card, 60_000)  # gold, about to leave the window
        await age_spend(engine, card, 12)

    def reviewing() -> Any:
        return review(app.state.engine, app.state.program, page=2)

    work = [post_purchase(client, till, card, 1_500) for card in rising + falling]
    work += [after(0.003 * i, reviewing()) for i in range(4)]
    random.Random(11).shuffle(work)
    results = await asyncio.gather(*work)
    purchases = [r for r in results if isinstance(r, Response)]
    assert {r.status_code for r in purchases} == {201}, [r.text for r in purchases]

    for card in rising:
        assert (await stored_tier(engine, card))[0] == "silver"
        [answer] = [r.json() for r in purchases if r.json()["card_number"] == card]
        assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
        assert answer["applied"] == expected_applied(partner, 1_500, BY_CODE["bronze"])
    for card in falling:
        [answer] = [r.json() for r in purchases if r.json()["card_number"] == card]
        # Before the first review that reached it, the purchase earned gold; after, bronze.
        # Either way the card ends where its spend in the window reaches.
        assert answer["applied"] in (
            expected_applied(partner, 1_500, BY_CODE["gold"]),
            expected_applied(partner, 1_500, BY_CODE["bronze"]),
        )
        assert (await stored_tier(engine, card))[0] == "bronze"
    # Every card (the rising ones moved up by their purchases, the falling ones down by one of
    # the reviews) stands where a serial order leaves it: one more review changes nothing.
    assert await review(app.state.engine, app.state.program) == 0
    await ledger_ok(client, operator, engine)


@pytest.mark.parametrize("review_first", [False, True])
async def test_a_review_and_a_purchase_queued_on_one_card_apply_in_order(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    review_first: bool,
) -> None:
    """A gold card whose spend left the window, and a purchase of it: queued behind the card's
    lock, the review and the purchase each see what the other did."""
    await set_ladder(client, operator)
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 60_000)
    await age_spend(engine, card, 12)
    await buy(client, till, card, 9_500)  # bronze by spend, still gold by tier

    reviewing = review(app.state.engine, app.state.program)
    buying = post_purchase(client, till, card, 1_000)
    queued = [reviewing, buying] if review_first else [buying, reviewing]
    results = await queued_behind_lock(engine, card, *queued)
    moved = results[0] if review_first else results[1]
    response = results[1] if review_first else results[0]
    assert response.status_code == 201, response.text
    answer = response.json()

    if review_first:
        # Down to bronze first (9_500), then the purchase earns at bronze and crosses silver.
        assert moved == 1
        assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["bronze"])
        assert answer["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    else:
        # The purchase earns at gold (the card has not been reviewed); the review then sees
        # its spend (10_500) and moves the card to silver, not bronze.
        assert answer["applied"] == expected_applied(partner, 1_000, BY_CODE["gold"])
        assert answer["tier"] == {"code": "gold", "upgraded_from": None}
        assert moved == 1
    assert (await stored_tier(engine, card))[0] == "silver"
    assert await review(app.state.engine, app.state.program) == 0
    await ledger_ok(client, operator, engine)


# Returns, replacements and rule changes racing purchases ------------------------------------


async def test_purchases_and_returns_racing_on_one_card_keep_the_spend_exact(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    crossing = await buy(client, till, card, 10_000)
    assert crossing["tier"] == {"code": "silver", "upgraded_from": "bronze"}
    # Earlier purchases at silver: each return takes back the partner's leg and the tier
    # bonus's in proportion, each rounded on its own (ledger_ok checks every leg).
    earlier = [await buy(client, till, card, amount) for amount in (3_001, 2_999, 1_234)]
    assert all(len(p["applied"]) == 2 for p in earlier)
    rng = random.Random(5)
    returns = [(p, rng.randint(1, 600)) for p in earlier for _ in range(2)]
    work: list[Any] = [
        client.post(
            f"/v1/accruals/{p['transaction_id']}/refunds",
            json={"amount": amount},
            headers={**till, **idem()},
        )
        for p, amount in returns
    ]
    work += [post_purchase(client, till, card, 700) for _ in range(6)]
    rng.shuffle(work)
    answers: list[Response] = await asyncio.gather(*work)
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]

    # Without lines or points paid, eligible is the amount: a return takes back its own.
    spend = 10_000 + 3_001 + 2_999 + 1_234 + 6 * 700 - sum(amount for _, amount in returns)
    assert await spend_by_month(engine, card) == {this_month(): spend}
    await ledger_ok(client, operator, engine)


async def test_purchases_racing_a_replacement_all_count_on_the_card_that_keeps_the_value(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 8_000)
    replacing = client.post(f"/v1/cards/{card}/replace", json={}, headers={**operator, **idem()})
    work: list[Any] = [after(0.002 * i, post_purchase(client, till, card, 1_000)) for i in range(8)]
    work.insert(3, replacing)
    results: list[Response] = await asyncio.gather(*work)
    replaced = results[3]
    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["new_card"]["card_number"]
    purchases = results[:3] + results[4:]
    posted = [r for r in purchases if r.status_code == 201]
    refused = [r for r in purchases if r.status_code != 201]
    assert all(r.json()["code"] == "card_closed" for r in refused), [r.text for r in refused]

    spend = 8_000 + 1_000 * len(posted)
    assert await spend_by_month(engine, new) == {this_month(): spend}
    assert await spend_by_month(engine, card) == {}
    assert (await stored_tier(engine, new))[0] == reached(spend)
    await ledger_ok(client, operator, engine)


async def test_concurrent_new_versions_are_consecutive(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    ladders = [
        client.put(
            "/v1/tiers",
            json={"tiers": LADDER, "window_months": months},
            headers=operator,
        )
        for months in range(1, 9)
    ]
    rules = [
        client.put(
            f"/v1/partners/{partner['id']}/earn-rule",
            json={"earn_rate": {"points": points, "per_amount": 100}},
            headers=operator,
        )
        for points in range(1, 9)
    ]
    answers: list[Response] = await asyncio.gather(*ladders, *rules)
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    assert sorted(r.json()["version"] for r in answers[:8]) == list(range(1, 9))
    assert sorted(r.json()["earn_rule_version"] for r in answers[8:]) == list(range(2, 10))

    current = (await client.get("/v1/tiers", headers=operator)).json()
    [last] = [r.json() for r in answers[:8] if r.json()["version"] == 8]
    assert current == last
    history = (
        await client.get(f"/v1/partners/{partner['id']}/earn-rules", headers=operator)
    ).json()
    assert [r["version"] for r in history] == list(range(9, 0, -1))
    # Each version stored the rate its request sent.
    sent = {r.json()["earn_rule_version"]: r.json()["earn_rate"] for r in answers[8:]}
    assert all(r["earn_rate"] == sent[r["version"]] for r in history[:-1])
    partner_now = (await client.get(f"/v1/partners/{partner['id']}", headers=operator)).json()
    assert partner_now["earn_rule_version"] == 9
    assert partner_now["earn_rate"] == history[0]["earn_rate"]


async def test_purchases_racing_earn_rule_changes_each_earn_by_one_whole_version(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    lines = [{"sku": "T", "category": "tobacco", "amount": 3_000}, {"sku": "F", "amount": 7_000}]
    changes = [
        {
            "earn_rate": {"points": points, "per_amount": 100},
            "cashback_bps": 100 * points,
            "excluded_categories": ["tobacco"] if points % 2 == 0 else [],
        }
        for points in (2, 3, 4, 5)
    ]
    work: list[Any] = [post_purchase(client, till, card, 10_000, lines=lines) for _ in range(12)]
    for k, rule in enumerate(changes):
        work.insert(
            3 * k + 2,
            after(
                0.003 * k,
                client.put(f"/v1/partners/{partner['id']}/earn-rule", json=rule, headers=operator),
            ),
        )
    answers: list[Response] = await asyncio.gather(*work)
    assert {r.status_code for r in answers} <= {200, 201}, [r.text for r in answers]
    puts = {
        r.json()["earn_rule_version"]: r.json() for r in answers if "earn_rule_version" in r.json()
    }
    assert sorted(puts) == [2, 3, 4, 5]
    # The version numbers were taken in some order; map each to the rule it stored.
    stored = {
        v: ((p["earn_rate"]["points"], 100), p["cashback_bps"], p["excluded_categories"])
        for v, p in puts.items()
    }
    stored[1] = ((1, 100), 500, [])  # the factory's
    for r in answers:
        body = r.json()
        if "applied" not in body:
            continue
        [base] = body["applied"]
        (points, per), bps, excluded = stored[base["rule_version"]]
        eligible = 7_000 if excluded else 10_000
        assert body["eligible_amount"] == eligible, body
        assert (base["points"], base["cashback"]) == (
            eligible * points // per,
            eligible * bps // 10_000,
        ), body
    await ledger_ok(client, operator, engine)


async def test_returns_of_racing_purchases_reduce_the_spend_they_added(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Purchases race over the threshold, then every one is returned at once: the spend goes
    back to zero, the card keeps its tier until the review."""
    await set_ladder(client, operator)
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    # Each purchase earns at bronze: eight of 1_250 reach silver only with the last one.
    answers: list[Response] = await asyncio.gather(
        *(post_purchase(client, till, card, 1_250) for _ in range(8))
    )
    assert {r.status_code for r in answers} == {201}
    assert (await stored_tier(engine, card))[0] == "silver"
    await asyncio.gather(
        *(returned_ok(client, till, r.json()["transaction_id"], 1_250) for r in answers)
    )
    assert await spend_by_month(engine, card) == {this_month(): 0}
    assert (await stored_tier(engine, card))[0] == "silver"
    assert await review(app.state.engine, app.state.program) == 1
    assert (await stored_tier(engine, card))[0] == "bronze"
    await ledger_ok(client, operator, engine)
