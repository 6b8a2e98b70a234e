"""Campaigns: the API (POST/GET /v1/campaigns, POST /v1/campaigns/{id}/end) and what a campaign
adds to a purchase: a multiplier (in percent of the base points, optionally only on basket
lines in some categories) or a first-purchase bonus, scoped to a partner and to tiers, funded
by the operator or the partner, inside its window, capped by its budget; previews that show it
without spending the budget; returns that take it back.

Every purchase's campaign bonus is checked three ways: the answer's `applied` rows, the
`earnings` table, and the entries on the account that funds it. `campaigns_ok` checks each
campaign's spent_points against the earnings rows of that campaign and its budget.

The helpers here are shared by tests/rules/test_campaign_races.py.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.ledger.helpers_ledger import scalar
from tests.ledger.test_returns import assert_problem, ledger_ok, returned_ok, reverse

# The partner of these tests earns 1 point per 1.00 and 5 % cashback (the factory's default):
# a purchase of 100.00 earns 100 points and 5.00 of cashback.
CAMPAIGNS = "/v1/campaigns"

# Helpers (shared) ----------------------------------------------------------------------------


def at(delta: timedelta) -> str:
    """An aware timestamp `delta` from now, as JSON."""
    return (datetime.now(UTC) + delta).isoformat()


def campaign_body(code: str, **overrides: Any) -> dict[str, Any]:
    """A multiplier doubling the base points, running from an hour ago to tomorrow."""
    return {
        "code": code,
        "name": f"Campaign {code}",
        "kind": "multiplier",
        "points_pct": 100,
        "starts_at": at(-timedelta(hours=1)),
        "ends_at": at(timedelta(days=1)),
        **overrides,
    }


def first_purchase_body(code: str, bonus_points: int, **overrides: Any) -> dict[str, Any]:
    body = campaign_body(code, kind="first_purchase", bonus_points=bonus_points, **overrides)
    del body["points_pct"]
    return body


async def create_campaign(
    client: AsyncClient, operator: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    r = await client.post(CAMPAIGNS, json=body, headers=operator)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def get_campaign(
    client: AsyncClient, operator: dict[str, str], campaign_id: str
) -> dict[str, Any]:
    r = await client.get(f"{CAMPAIGNS}/{campaign_id}", headers=operator)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def end_campaign(
    client: AsyncClient, operator: dict[str, str], campaign_id: str
) -> dict[str, Any]:
    r = await client.post(f"{CAMPAIGNS}/{campaign_id}/end", headers=operator)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def purchase_body(card: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": f"rcpt-{uuid.uuid4()}",
        **extra,
    }


def post_purchase(
    client: AsyncClient, till: dict[str, str], card: str, amount: int, **extra: Any
) -> Any:
    """POST /v1/accruals (un-awaited, so races can gather many)."""
    return client.post(
        "/v1/accruals", json=purchase_body(card, amount, **extra), headers={**till, **idem()}
    )


async def buy(
    client: AsyncClient, till: dict[str, str], card: str, amount: int, **extra: Any
) -> dict[str, Any]:
    """A posted purchase's answer."""
    r = await post_purchase(client, till, card, amount, **extra)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def campaign_rows(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(code, version, points) of each campaign that applied, sorted (campaigns are not listed
    in any particular order among themselves)."""
    rows = []
    for row in answer["applied"]:
        if row["rule"] == "campaign":
            assert row["cashback"] == 0, row
            rows.append((row["rule_ref"], row["rule_version"], row["points"]))
    return sorted(rows)


def granted(answers: list[dict[str, Any]], code: str) -> list[int]:
    """What the campaign `code` added to each answer that lists it."""
    return [points for a in answers for ref, _, points in campaign_rows(a) if ref == code]


async def earnings_of(engine: AsyncEngine, transaction_id: str) -> list[tuple[str, str, int, int]]:
    """(rule, rule_ref, rule_version, points) of the earnings rows of a posting, cashback
    folded into the base row's check by callers that need it."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT rule, rule_ref, rule_version, points, cashback FROM earnings"
                " WHERE transaction_id = :t ORDER BY rule, rule_ref"
            ),
            {"t": transaction_id},
        )
        return [(r.rule, r.rule_ref, r.rule_version, int(r.points)) for r in rows]


def stored_like_answer(answer: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    return sorted(
        (r["rule"], r["rule_ref"], r["rule_version"], r["points"]) for r in answer["applied"]
    )


async def campaign_earnings(engine: AsyncEngine, code: str) -> int:
    """Sum of the earnings rows of campaign `code`."""
    return int(
        await scalar(
            engine,
            "SELECT coalesce(sum(points), 0) FROM earnings WHERE rule = 'campaign'"
            " AND rule_ref = :code",
            code=code,
        )
    )


async def legs(engine: AsyncEngine, transaction_id: str) -> list[tuple[str, str | None, str, int]]:
    """(account kind, partner id, asset, amount) of a transaction's entries, sorted."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a.kind, a.partner_id, e.asset, e.amount FROM entries e"
                " JOIN accounts a ON a.id = e.account_id WHERE e.transaction_id = :t"
            ),
            {"t": transaction_id},
        )
        found = [
            (r.kind, str(r.partner_id) if r.partner_id else None, r.asset, int(r.amount))
            for r in rows
        ]
    return sorted(found, key=lambda leg: (leg[0], leg[1] or "", leg[2], leg[3]))


async def issued_points(engine: AsyncEngine) -> dict[tuple[str, str | None], int]:
    """Net points per issuing account: (kind, partner id) -> sum of its entries."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a.kind, a.partner_id, coalesce(sum(e.amount), 0) AS total FROM accounts a"
                " LEFT JOIN entries e ON e.account_id = a.id"
                " WHERE a.kind IN ('operator_issued', 'partner_issued') AND a.asset = 'points'"
                " GROUP BY a.id"
            )
        )
        return {
            (r.kind, str(r.partner_id) if r.partner_id else None): int(r.total)
            for r in rows
            if int(r.total)
        }


_WINDOW_CHECK = (
    "campaign bonuses posted outside the campaign's window, or by a version it never had"
)

_CAMPAIGN_CHECKS = {
    "campaigns whose spent_points is not what their earnings rows granted, or over budget": """
        SELECT k.code, k.spent_points, k.budget_points, g.granted FROM campaigns k
        LEFT JOIN LATERAL (
            SELECT coalesce(sum(e.points), 0) AS granted FROM earnings e
            WHERE e.rule = 'campaign' AND e.rule_ref = k.code
        ) g ON true
        WHERE k.spent_points <> g.granted OR k.spent_points > k.budget_points
    """,
    _WINDOW_CHECK: """
        SELECT t.id, k.code, t.posted_at, k.starts_at, k.ends_at FROM earnings e
        JOIN transactions t ON t.id = e.transaction_id
        JOIN campaigns k ON k.code = e.rule_ref
        WHERE e.rule = 'campaign' AND (t.posted_at < k.starts_at OR t.posted_at >= k.ends_at)
    """,
    "campaign rows of a version the campaign never had, or not points of a purchase": """
        SELECT t.id, k.code, e.rule_version, e.points, e.cashback FROM earnings e
        JOIN transactions t ON t.id = e.transaction_id
        JOIN campaigns k ON k.code = e.rule_ref
        WHERE e.rule = 'campaign'
          AND (e.rule_version NOT BETWEEN 1 AND k.version OR e.points < 0
               OR (e.points = 0 AND k.kind IN ('multiplier', 'first_purchase'))
               OR e.cashback <> 0
               OR (t.type <> 'accrual' AND NOT (t.type = 'award' AND k.kind = 'referral')))
    """,
    "campaign bonuses of a partner's campaign on purchases at another partner": """
        SELECT t.id, k.code FROM earnings e JOIN transactions t ON t.id = e.transaction_id
        JOIN campaigns k ON k.code = e.rule_ref
        WHERE e.rule = 'campaign' AND k.partner_id IS NOT NULL AND k.partner_id <> t.partner_id
    """,
    "cards with more than one bonus of a first-purchase campaign": """
        SELECT t.card_id, k.code, count(*) FROM earnings e
        JOIN transactions t ON t.id = e.transaction_id JOIN campaigns k ON k.code = e.rule_ref
        WHERE e.rule = 'campaign' AND k.kind IN ('first_purchase', 'referral')
          AND t.type = 'accrual'
        GROUP BY t.card_id, k.code HAVING count(*) > 1
    """,
}


async def campaigns_ok(engine: AsyncEngine, *, window: bool = True) -> None:
    """What the campaigns granted agrees with their terms: spent_points is the sum of their
    earnings rows and within the budget, each bonus was posted inside the window, at the
    campaign's partner, at most once per card for a first purchase. (`window=False` skips the
    window check, for races with an end: see test_a_purchase_posted_after_the_end_...)"""
    async with engine.connect() as conn:
        for name, sql in _CAMPAIGN_CHECKS.items():
            if name == _WINDOW_CHECK and not window:
                continue
            rows = [tuple(row) for row in await conn.execute(text(sql))]
            assert rows == [], f"{name}: {rows}"


async def books_ok(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine, *, window: bool = True
) -> None:
    await ledger_ok(client, operator, engine)
    await campaigns_ok(engine, window=window)


async def count_campaigns(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM campaigns"))


async def set_ladder(client: AsyncClient, operator: dict[str, str], ladder: dict[str, Any]) -> None:
    r = await client.put("/v1/tiers", json=ladder, headers=operator)
    assert r.status_code == 200, r.text


# Create, list, get, end ----------------------------------------------------------------------


async def test_a_campaign_is_created_read_back_listed_and_ended(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner, _ = await partner_with_key(app, client, operator)
    starts, ends = at(-timedelta(minutes=5)), at(timedelta(days=30))
    body = campaign_body(
        "shoes-x3",
        name="Triple points on shoes",
        points_pct=200,
        starts_at=starts,
        ends_at=ends,
        partner_id=partner["id"],
        categories=["shoes", "bags"],
        tiers=["gold"],
        funded_by="partner",
        budget_points=5_000,
    )
    created = await create_campaign(client, operator, body)
    expected = {
        "code": "shoes-x3",
        "name": "Triple points on shoes",
        "kind": "multiplier",
        "points_pct": 200,
        "bonus_points": 0,
        "partner_id": partner["id"],
        "categories": ["shoes", "bags"],
        "tiers": ["gold"],
        "funded_by": "partner",
        "budget_points": 5_000,
        "spent_points": 0,
        "version": 1,
    }
    assert {k: created[k] for k in expected} == expected
    uuid.UUID(created["id"])
    assert datetime.fromisoformat(created["starts_at"]) == datetime.fromisoformat(starts)
    assert datetime.fromisoformat(created["ends_at"]) == datetime.fromisoformat(ends)
    assert abs(datetime.fromisoformat(created["created_at"]) - datetime.now(UTC)) < timedelta(
        minutes=1
    )

    # The defaults of a first-purchase campaign: the operator funds it, no scope, no budget.
    welcome = await create_campaign(
        client,
        operator,
        first_purchase_body("welcome", 500, starts_at=at(-timedelta(days=2))),
    )
    assert {
        k: welcome[k]
        for k in (
            "kind",
            "points_pct",
            "bonus_points",
            "partner_id",
            "categories",
            "tiers",
            "funded_by",
            "budget_points",
            "spent_points",
            "version",
        )
    } == {
        "kind": "first_purchase",
        "points_pct": 0,
        "bonus_points": 500,
        "partner_id": None,
        "categories": None,
        "tiers": None,
        "funded_by": "operator",
        "budget_points": None,
        "spent_points": 0,
        "version": 1,
    }

    assert await get_campaign(client, operator, created["id"]) == created
    listed = (await client.get(CAMPAIGNS, headers=operator)).json()
    assert listed == [created, welcome]  # the latest start first

    ended = await end_campaign(client, operator, created["id"])
    assert ended["version"] == 2
    assert datetime.fromisoformat(ended["ends_at"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(ended["ends_at"]) > datetime.fromisoformat(starts)
    assert {k: v for k, v in ended.items() if k not in ("ends_at", "version")} == {
        k: v for k, v in created.items() if k not in ("ends_at", "version")
    }
    assert await get_campaign(client, operator, created["id"]) == ended

    again = await client.post(f"{CAMPAIGNS}/{created['id']}/end", headers=operator)
    assert_problem(again, 409, "campaign_ended")
    assert await get_campaign(client, operator, created["id"]) == ended


async def test_a_campaign_whose_window_is_over_cannot_be_ended(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    past = await create_campaign(
        client,
        operator,
        campaign_body(
            "last-week", starts_at=at(-timedelta(days=9)), ends_at=at(-timedelta(days=2))
        ),
    )
    r = await client.post(f"{CAMPAIGNS}/{past['id']}/end", headers=operator)
    assert_problem(r, 409, "campaign_ended")
    assert await get_campaign(client, operator, past["id"]) == past


async def test_a_campaign_that_has_not_started_can_be_ended_and_never_applies(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    future = await create_campaign(
        client,
        operator,
        campaign_body("next-week", starts_at=at(timedelta(days=7)), ends_at=at(timedelta(days=9))),
    )
    r = await client.post(f"{CAMPAIGNS}/{future['id']}/end", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    # Ended before it started, its window is empty (ends_at = starts_at). Even once the start
    # it was planned for has come (moved into the past here), it does not apply.
    assert r.json()["ends_at"] == r.json()["starts_at"]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE campaigns SET starts_at = starts_at - interval '8 days',"
                " ends_at = ends_at - interval '8 days'"
            ),
        )
    assert campaign_rows(await buy(client, till, card, 10_000)) == []


async def test_unknown_campaigns_are_not_found(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    missing = uuid.uuid4()
    assert_problem(
        await client.get(f"{CAMPAIGNS}/{missing}", headers=operator), 404, "campaign_not_found"
    )
    assert_problem(
        await client.post(f"{CAMPAIGNS}/{missing}/end", headers=operator),
        404,
        "campaign_not_found",
    )
    assert (await client.get(CAMPAIGNS, headers=operator)).json() == []


async def test_campaigns_are_the_operators_alone(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    created = await create_campaign(client, operator, campaign_body("op-only"))
    own = campaign_body("mine", partner_id=partner["id"], funded_by="partner")
    calls = [
        ("POST", CAMPAIGNS, own),
        ("GET", CAMPAIGNS, None),
        ("GET", f"{CAMPAIGNS}/{created['id']}", None),
        ("POST", f"{CAMPAIGNS}/{created['id']}/end", None),
    ]
    for headers, status, code in ((till, 403, "forbidden"), ({}, 401, "unauthorized")):
        for method, path, body in calls:
            r = await client.request(method, path, json=body, headers=headers)
            assert_problem(r, status, code)
    assert await count_campaigns(engine) == 1
    assert await get_campaign(client, operator, created["id"]) == created


async def test_a_taken_code_and_an_unknown_partner_are_refused(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    first = await create_campaign(client, operator, campaign_body("spring"))
    for body in (
        campaign_body("spring"),
        first_purchase_body("spring", 100),  # another kind, the same code
    ):
        r = await client.post(CAMPAIGNS, json=body, headers=operator)
        assert_problem(r, 409, "campaign_code_taken")
    ghost = str(uuid.uuid4())
    for body in (
        campaign_body("ghost", partner_id=ghost),
        campaign_body("ghost-funded", partner_id=ghost, funded_by="partner"),
    ):
        r = await client.post(CAMPAIGNS, json=body, headers=operator)
        assert_problem(r, 404, "partner_not_found")
    assert await count_campaigns(engine) == 1
    assert (await client.get(CAMPAIGNS, headers=operator)).json() == [first]
    # An ended campaign's code stays taken.
    await end_campaign(client, operator, first["id"])
    assert_problem(
        await client.post(CAMPAIGNS, json=campaign_body("spring"), headers=operator),
        409,
        "campaign_code_taken",
    )


# Multipliers ---------------------------------------------------------------------------------


async def test_a_multiplier_adds_its_percent_of_the_base_points_rounded_down(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    x = await create_campaign(client, operator, campaign_body("x-150", points_pct=150))
    card = (await issue_card(client, operator))["card_number"]
    # (amount, base points, bonus): the bonus is floor(base * 150 / 100).
    cases = [(10_000, 100, 150), (1_050, 10, 15), (990, 9, 13), (100, 1, 1), (199, 1, 1)]
    total = 0
    for amount, base, bonus in cases:
        answer = await buy(client, till, card, amount)
        assert answer["applied"][0] == {
            "rule": "base",
            "rule_ref": partner["id"],
            "rule_version": 1,
            "points": base,
            "cashback": amount * 500 // 10_000,
        }
        assert campaign_rows(answer) == [("x-150", 1, bonus)]
        assert answer["earned"] == {"points": base + bonus, "cashback": amount * 500 // 10_000}
        assert await earnings_of(engine, answer["transaction_id"]) == stored_like_answer(answer)
        assert await legs(engine, answer["transaction_id"]) == sorted(
            [
                ("card", None, "cashback", amount * 500 // 10_000),
                ("card", None, "points", base),
                ("card", None, "points", bonus),
                ("operator_issued", None, "points", -bonus),
                ("partner_issued", partner["id"], "cashback", -(amount * 500 // 10_000)),
                ("partner_issued", partner["id"], "points", -base),
            ],
            key=lambda leg: (leg[0], leg[1] or "", leg[2], leg[3]),
        )
        total += bonus
    # A purchase too small for a base point gets no multiplier either (and no row for it).
    small = await buy(client, till, card, 99)
    assert small["earned"] == {"points": 0, "cashback": 4}
    assert campaign_rows(small) == []
    assert (await get_campaign(client, operator, x["id"]))["spent_points"] == total
    assert await issued_points(engine) == {
        ("operator_issued", None): -total,
        ("partner_issued", partner["id"]): -sum(base for _, base, _ in cases),
    }
    await books_ok(client, operator, engine)


async def test_a_multiplier_on_categories_counts_only_the_eligible_part_of_those_lines(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The partner excludes the GIFT sku and the tobacco category; the campaign doubles the
    points of shoes and bags. Points paid with points (redeemed_amount) earn nothing, in
    proportion, for the campaign as for the base."""
    _, till = await partner_with_key(
        app, client, operator, excluded_skus=["GIFT"], excluded_categories=["tobacco"]
    )
    await create_campaign(
        client, operator, campaign_body("shoes-bags", points_pct=150, categories=["shoes", "bags"])
    )
    card = (await issue_card(client, operator))["card_number"]

    lines = [
        {"sku": "SHOE", "category": "shoes", "amount": 8_000},
        {"sku": "BAG", "category": "bags", "amount": 3_000},
        {"sku": "GIFT", "category": "shoes", "amount": 2_000},  # excluded by sku, in scope
        {"sku": "CIG", "category": "tobacco", "amount": 1_000},  # excluded
        {"sku": "SOCK", "category": "socks", "amount": 6_000},  # earns, not in scope
    ]
    answer = await buy(client, till, card, 20_000, lines=lines, redeemed_amount=4_000)
    # Eligible: (8_000 + 3_000 + 6_000) * 16_000 / 20_000 = 13_600 -> 136 points.
    # In scope: (8_000 + 3_000) * 16_000 / 20_000 = 8_800 -> 88 points -> 150 %: 132.
    assert answer["eligible_amount"] == 13_600
    assert answer["applied"][0]["points"] == 136
    assert campaign_rows(answer) == [("shoes-bags", 1, 132)]
    assert answer["earned"] == {"points": 136 + 132, "cashback": 680}

    # Rounding of the scoped part: 1_999 * 2_999 // 3_000 = 1_998 -> 19 points -> 28.
    lines = [
        {"sku": "SHOE", "category": "shoes", "amount": 1_999},
        {"sku": "SOCK", "category": "socks", "amount": 1_001},
    ]
    answer = await buy(client, till, card, 3_000, lines=lines, redeemed_amount=1)
    assert (answer["eligible_amount"], answer["applied"][0]["points"]) == (2_999, 29)
    assert campaign_rows(answer) == [("shoes-bags", 1, 28)]

    # No line in scope, only an excluded one in scope, or no lines at all: no bonus.
    for extra in (
        {"lines": [{"sku": "SOCK", "category": "socks", "amount": 5_000}]},
        {
            "lines": [
                {"sku": "GIFT", "category": "shoes", "amount": 2_000},
                {"sku": "SOCK", "category": "socks", "amount": 3_000},
            ]
        },
        {"lines": [{"sku": "X", "amount": 5_000}]},  # a line without a category
        {},
    ):
        answer = await buy(client, till, card, 5_000, **extra)
        assert answer["applied"][0]["points"] > 0
        assert campaign_rows(answer) == [], extra
    assert await campaign_earnings(engine, "shoes-bags") == 132 + 28
    await books_ok(client, operator, engine)


async def test_a_purchase_that_earns_nothing_gets_no_campaign_bonus(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Eligible amount 0 (every line excluded): nothing posted, not even a first-purchase
    bonus; the card's next purchase is still its first."""
    _, till = await partner_with_key(app, client, operator, excluded_categories=["tobacco"])
    await create_campaign(client, operator, campaign_body("double"))
    await create_campaign(client, operator, first_purchase_body("welcome", 300))
    card = (await issue_card(client, operator))["card_number"]
    r = await post_purchase(
        client, till, card, 5_000, lines=[{"sku": "CIG", "category": "tobacco", "amount": 5_000}]
    )
    assert r.status_code == 200, r.text
    assert (r.json()["transaction_id"], r.json()["applied"][1:]) == (None, [])
    assert await scalar(engine, "SELECT count(*) FROM transactions") == 0

    answer = await buy(client, till, card, 1_000)
    assert campaign_rows(answer) == [("double", 1, 10), ("welcome", 1, 300)]
    await books_ok(client, operator, engine)


# First purchase ------------------------------------------------------------------------------


async def test_a_first_purchase_bonus_is_granted_once_per_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    # A card that bought before the campaign existed had its first purchase already.
    veteran = (await issue_card(client, operator))["card_number"]
    await buy(client, till, veteran, 2_000)
    welcome = await create_campaign(client, operator, first_purchase_body("welcome", 500))

    card = (await issue_card(client, operator))["card_number"]
    first = await buy(client, till, card, 1_000)
    assert campaign_rows(first) == [("welcome", 1, 500)]
    assert first["earned"] == {"points": 10 + 500, "cashback": 50}
    assert await earnings_of(engine, first["transaction_id"]) == stored_like_answer(first)
    second = await buy(client, till, card, 1_000)
    assert campaign_rows(second) == []
    assert second["earned"] == {"points": 10, "cashback": 50}

    assert campaign_rows(await buy(client, till, veteran, 1_000)) == []

    # Points awarded outside a purchase do not make the next purchase any less the first.
    awarded = (await issue_card(client, operator))["card_number"]
    r = await client.post(
        "/v1/accruals",
        json={"kind": "award", "card_number": awarded, "points": 7, "reason": "goodwill"},
        headers={**operator, **idem()},
    )
    assert r.status_code == 201, r.text
    assert campaign_rows(await buy(client, till, awarded, 1_000)) == [("welcome", 1, 500)]

    # A reversed first purchase still was the card's first.
    reverted = (await issue_card(client, operator))["card_number"]
    gone = await buy(client, till, reverted, 1_000)
    assert campaign_rows(gone) == [("welcome", 1, 500)]
    assert (await reverse(client, operator, gone["transaction_id"])).status_code == 201
    assert campaign_rows(await buy(client, till, reverted, 1_000)) == []

    assert (await get_campaign(client, operator, welcome["id"]))["spent_points"] == 1_500
    await books_ok(client, operator, engine)


async def test_two_purchases_of_one_card_in_one_batch_get_the_first_purchase_bonus_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    await create_campaign(client, operator, first_purchase_body("welcome", 500))
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(2)]
    items = [
        {"type": "purchase", "card_number": c, "amount": 1_000, "currency": "EUR", "reference": r}
        for c, r in ((cards[0], "a1"), (cards[0], "a2"), (cards[1], "b1"), (cards[0], "a3"))
    ]
    r = await client.post("/v1/batches", json={"items": items}, headers={**till, **idem()})
    assert r.status_code == 200, r.text
    results = [item["result"] for item in r.json()["items"]]
    assert [campaign_rows(a) for a in results] == [
        [("welcome", 1, 500)],
        [],
        [("welcome", 1, 500)],
        [],
    ]
    await books_ok(client, operator, engine)


# Overlaps, scopes and funding ----------------------------------------------------------------

LADDER = {
    "tiers": [
        {"code": "basic", "name": "Basic", "threshold": 0},
        {"code": "gold", "name": "Gold", "threshold": 5_000, "points_bonus_pct": 50},
    ]
}


async def test_overlapping_campaigns_all_apply_and_add_up(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A double-points multiplier, a first-purchase bonus and a gold-only multiplier at once.
    The first purchase is earned at basic (it moves the card to gold): the gold campaign
    waits for the next one, which gets no first-purchase bonus."""
    partner, till = await partner_with_key(app, client, operator)
    await set_ladder(client, operator, LADDER)
    await create_campaign(client, operator, campaign_body("double"))
    await create_campaign(client, operator, first_purchase_body("welcome", 300))
    await create_campaign(client, operator, campaign_body("gold-20", points_pct=20, tiers=["gold"]))
    card = (await issue_card(client, operator))["card_number"]

    first = await buy(client, till, card, 10_000)
    assert first["applied"][0]["points"] == 100
    assert [r["rule"] for r in first["applied"]] == ["base", "campaign", "campaign"]
    assert campaign_rows(first) == [("double", 1, 100), ("welcome", 1, 300)]
    assert first["earned"] == {"points": 100 + 100 + 300, "cashback": 500}
    assert first["tier"] == {"code": "gold", "upgraded_from": "basic"}

    second = await buy(client, till, card, 10_000)
    assert [r["rule"] for r in second["applied"]] == ["base", "tier", "campaign", "campaign"]
    assert second["applied"][1] == {
        "rule": "tier",
        "rule_ref": "gold",
        "rule_version": 1,
        "points": 50,
        "cashback": 0,
    }
    # Both multipliers are in percent of the base points, not of base plus tier bonus.
    assert campaign_rows(second) == [("double", 1, 100), ("gold-20", 1, 20)]
    assert second["earned"] == {"points": 100 + 50 + 100 + 20, "cashback": 500}
    for answer in (first, second):
        assert await earnings_of(engine, answer["transaction_id"]) == stored_like_answer(answer)
    assert await issued_points(engine) == {
        ("operator_issued", None): -(100 + 300 + 50 + 100 + 20),
        ("partner_issued", partner["id"]): -200,
    }
    assert {
        c["code"]: c["spent_points"] for c in (await client.get(CAMPAIGNS, headers=operator)).json()
    } == {
        "double": 200,
        "welcome": 300,
        "gold-20": 20,
    }
    await books_ok(client, operator, engine)


async def test_a_tier_scoped_campaign_needs_a_ladder_and_the_tier(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    await create_campaign(client, operator, campaign_body("basic-only", tiers=["basic"]))
    card = (await issue_card(client, operator))["card_number"]
    # No ladder: the card has no tier, so no tier-scoped campaign applies.
    assert campaign_rows(await buy(client, till, card, 1_000)) == []
    await set_ladder(client, operator, LADDER)
    # Spend 1_000 so far: basic. This purchase crosses into gold, earned at basic.
    crossing = await buy(client, till, card, 4_000)
    assert campaign_rows(crossing) == [("basic-only", 1, 40)]
    assert crossing["tier"] == {"code": "gold", "upgraded_from": "basic"}
    assert campaign_rows(await buy(client, till, card, 1_000)) == []
    await books_ok(client, operator, engine)


async def test_a_partners_campaign_ignores_purchases_at_other_partners(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, shop_till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    await create_campaign(client, operator, campaign_body("shop-x2", partner_id=shop["id"]))
    await create_campaign(
        client, operator, first_purchase_body("shop-welcome", 250, partner_id=shop["id"])
    )
    card = (await issue_card(client, operator))["card_number"]
    elsewhere = await buy(client, other_till, card, 10_000)
    assert campaign_rows(elsewhere) == []
    # The first purchase is the card's first anywhere: the one at the other partner was it.
    at_shop = await buy(client, shop_till, card, 10_000)
    assert campaign_rows(at_shop) == [("shop-x2", 1, 100)]

    fresh = (await issue_card(client, operator))["card_number"]
    assert campaign_rows(await buy(client, shop_till, fresh, 10_000)) == [
        ("shop-welcome", 1, 250),
        ("shop-x2", 1, 100),
    ]
    # An operator key posting for a partner is scoped by the partner it names.
    r = await client.post(
        "/v1/accruals",
        json=purchase_body(fresh, 1_000, partner_id=shop["id"]),
        headers={**operator, **idem()},
    )
    assert r.status_code == 201, r.text
    assert campaign_rows(r.json()) == [("shop-x2", 1, 10)]
    await books_ok(client, operator, engine)


async def test_the_operator_or_the_partner_funds_the_bonus(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    await create_campaign(
        client,
        operator,
        campaign_body("shop-pays", points_pct=30, partner_id=shop["id"], funded_by="partner"),
    )
    await create_campaign(
        client, operator, campaign_body("op-pays", points_pct=20, partner_id=shop["id"])
    )
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 10_000)
    assert campaign_rows(answer) == [("op-pays", 1, 20), ("shop-pays", 1, 30)]
    tx = answer["transaction_id"]
    assert await legs(engine, tx) == [
        ("card", None, "cashback", 500),
        ("card", None, "points", 20),
        ("card", None, "points", 30),
        ("card", None, "points", 100),
        ("operator_issued", None, "points", -20),
        ("partner_issued", shop["id"], "cashback", -500),
        ("partner_issued", shop["id"], "points", -100),
        ("partner_issued", shop["id"], "points", -30),
    ]
    r = await client.get(f"/v1/transactions/{tx}", headers=operator)
    assert r.status_code == 200, r.text
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in r.json()["entries"]) == [
        ("card", "cashback", 500),
        ("card", "points", 20),
        ("card", "points", 30),
        ("card", "points", 100),
        ("operator_issued", "points", -20),
        ("partner_issued", "cashback", -500),
        ("partner_issued", "points", -100),
        ("partner_issued", "points", -30),
    ]
    assert await issued_points(engine) == {
        ("operator_issued", None): -20,
        ("partner_issued", shop["id"]): -130,
    }
    await books_ok(client, operator, engine)


# Windows -------------------------------------------------------------------------------------


async def test_a_campaign_applies_only_inside_its_window(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    await create_campaign(
        client,
        operator,
        campaign_body("soon", starts_at=at(timedelta(minutes=10)), ends_at=at(timedelta(days=1))),
    )
    await create_campaign(
        client,
        operator,
        first_purchase_body(
            "was", 999, starts_at=at(-timedelta(days=3)), ends_at=at(-timedelta(seconds=1))
        ),
    )
    card = (await issue_card(client, operator))["card_number"]
    assert campaign_rows(await buy(client, till, card, 1_000)) == []
    # The start comes (the clock moved by rewriting the window).
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE campaigns SET starts_at = now() - interval '1 second' WHERE code = 'soon'")
        )
    assert campaign_rows(await buy(client, till, card, 1_000)) == [("soon", 1, 10)]
    # The end comes.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE campaigns SET ends_at = now() WHERE code = 'soon'"))
    assert campaign_rows(await buy(client, till, card, 1_000)) == []
    await books_ok(client, operator, engine)


async def test_the_window_is_judged_when_the_purchase_is_posted_not_when_it_occurred(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Current behaviour: a purchase posted late (occurred_at before the campaign started)
    gets a campaign running when it is posted."""
    _, till = await partner_with_key(app, client, operator)
    await create_campaign(
        client, operator, campaign_body("now-on", starts_at=at(-timedelta(minutes=1)))
    )
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 1_000, occurred_at=at(-timedelta(days=2)))
    assert campaign_rows(answer) == [("now-on", 1, 10)]
    await books_ok(client, operator, engine)


async def test_a_campaign_ended_early_stops_applying_at_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    double = await create_campaign(client, operator, campaign_body("double"))
    card = (await issue_card(client, operator))["card_number"]
    before = await buy(client, till, card, 1_000)
    assert campaign_rows(before) == [("double", 1, 10)]

    ended = await end_campaign(client, operator, double["id"])
    assert (ended["version"], ended["spent_points"]) == (2, 10)
    after = await buy(client, till, card, 1_000)
    assert campaign_rows(after) == []
    preview = await client.post(
        "/v1/accruals/preview",
        json={"card_number": card, "amount": 1_000, "currency": "EUR"},
        headers=till,
    )
    assert preview.status_code == 200, preview.text
    assert campaign_rows(preview.json()) == []
    # What the purchase before the end earned keeps the version it earned by.
    assert await earnings_of(engine, before["transaction_id"]) == stored_like_answer(before)
    assert await campaign_earnings(engine, "double") == 10
    await books_ok(client, operator, engine)


# Budgets and previews ------------------------------------------------------------------------


async def test_a_budget_caps_the_bonus_and_the_purchase_that_reaches_it_gets_what_is_left(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    capped = await create_campaign(client, operator, campaign_body("capped", budget_points=250))
    welcome = await create_campaign(
        client, operator, first_purchase_body("welcome", 500, budget_points=800)
    )
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(4)]
    answers = [await buy(client, till, c, 10_000) for c in cards]
    assert [campaign_rows(a) for a in answers] == [
        [("capped", 1, 100), ("welcome", 1, 500)],
        [("capped", 1, 100), ("welcome", 1, 300)],
        [("capped", 1, 50)],
        [],
    ]
    # The base keeps earning whatever the campaigns have left.
    assert [a["earned"]["points"] for a in answers] == [700, 500, 150, 100]
    assert (await get_campaign(client, operator, capped["id"]))["spent_points"] == 250
    assert (await get_campaign(client, operator, welcome["id"]))["spent_points"] == 800
    assert await issued_points(engine) == {
        ("operator_issued", None): -1_050,
        ("partner_issued", partner["id"]): -400,
    }
    await books_ok(client, operator, engine)


async def test_a_preview_shows_the_bonus_and_spends_none_of_the_budget(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    capped = await create_campaign(client, operator, campaign_body("capped", budget_points=150))
    await create_campaign(client, operator, first_purchase_body("welcome", 40))
    card = (await issue_card(client, operator))["card_number"]
    body = {"card_number": card, "amount": 10_000, "currency": "EUR"}

    async def preview() -> dict[str, Any]:
        r = await client.post("/v1/accruals/preview", json=body, headers=till)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    for _ in range(3):
        shown = await preview()
        assert campaign_rows(shown) == [("capped", 1, 100), ("welcome", 1, 40)]
        assert shown["earned"] == {"points": 240, "cashback": 500}
    assert (await get_campaign(client, operator, capped["id"]))["spent_points"] == 0
    assert await scalar(engine, "SELECT count(*) FROM earnings") == 0

    posted = await buy(client, till, card, 10_000)
    assert campaign_rows(posted) == campaign_rows(shown)
    assert campaign_rows(await preview()) == [("capped", 1, 50)]  # what is left; no welcome
    assert campaign_rows(await buy(client, till, card, 10_000)) == [("capped", 1, 50)]
    assert campaign_rows(await preview()) == []
    assert (await get_campaign(client, operator, capped["id"]))["spent_points"] == 150
    await books_ok(client, operator, engine)


# Returns -------------------------------------------------------------------------------------


async def test_a_return_does_not_give_the_budget_back(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Current behaviour, a known choice: the budget counts points granted, and a return (or a
    reversal) of a purchase does not make them grantable again."""
    _, till = await partner_with_key(app, client, operator)
    capped = await create_campaign(client, operator, campaign_body("capped", budget_points=150))
    card = (await issue_card(client, operator))["card_number"]
    first = await buy(client, till, card, 10_000)
    second = await buy(client, till, card, 10_000)
    assert [campaign_rows(a) for a in (first, second)] == [
        [("capped", 1, 100)],
        [("capped", 1, 50)],
    ]
    await returned_ok(client, till, first["transaction_id"], 10_000)
    assert (await reverse(client, operator, second["transaction_id"])).status_code == 201
    assert (await get_campaign(client, operator, capped["id"]))["spent_points"] == 150
    assert campaign_rows(await buy(client, till, card, 10_000)) == []
    r = await client.get("/v1/audit", headers=operator)
    assert r.json()["ok"] is True, r.json()
    await campaigns_ok(engine)


async def test_a_return_takes_back_an_operator_funded_bonus_in_proportion(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    await create_campaign(client, operator, campaign_body("double"))
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 10_000)
    assert answer["earned"] == {"points": 200, "cashback": 500}
    tx = answer["transaction_id"]

    half = await returned_ok(client, till, tx, 5_000)
    assert half["taken_back"] == {"points": 100, "cashback": 250}
    rest = await returned_ok(client, till, tx, 5_000)
    assert rest["taken_back"] == {"points": 100, "cashback": 250}
    assert rest["balance"] == {"points": 0, "cashback": 0}
    # Each funder got back what it paid.
    assert await issued_points(engine) == {}
    await books_ok(client, operator, engine)


async def test_a_return_takes_back_a_partner_funded_bonus_in_proportion(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    await create_campaign(
        client,
        operator,
        campaign_body("shop-pays", points_pct=50, partner_id=shop["id"], funded_by="partner"),
    )
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 10_000)
    assert answer["earned"] == {"points": 150, "cashback": 500}
    tx = answer["transaction_id"]

    third = await returned_ok(client, till, tx, 3_333)
    audit = (await client.get("/v1/audit", headers=operator)).json()
    assert audit["ok"] is True, audit
    # Each leg in proportion: base 100 -> 33, bonus 50 -> 16; cashback 500 -> 166.
    assert third["taken_back"] == {"points": 49, "cashback": 166}
    assert third["balance"] == {"points": 101, "cashback": 334}
    rest = await returned_ok(client, till, tx, 6_667)
    assert rest["taken_back"] == {"points": 101, "cashback": 334}
    assert await issued_points(engine) == {}
    await books_ok(client, operator, engine)


async def test_a_reversal_takes_back_the_bonus_from_whoever_funded_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    await create_campaign(client, operator, campaign_body("op-pays", points_pct=20))
    await create_campaign(
        client,
        operator,
        campaign_body("shop-pays", points_pct=30, partner_id=shop["id"], funded_by="partner"),
    )
    card = (await issue_card(client, operator))["card_number"]
    answer = await buy(client, till, card, 10_000)
    assert answer["earned"] == {"points": 150, "cashback": 500}
    r = await reverse(client, operator, answer["transaction_id"])
    assert r.status_code == 201, r.text
    assert await issued_points(engine) == {}
    r = await client.get(f"/v1/cards/{card}/balance", headers=till)
    assert (r.json()["points"], r.json()["cashback"]) == (0, 0)
    await books_ok(client, operator, engine)
