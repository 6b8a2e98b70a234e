"""Statements reconciled with the ledger they come from.

The property: over random workloads (purchases, redemptions of points and cashback, partial
returns, reversals, redemption refunds, captured holds, at partners with different terms),
closed in two periods with corrections of the first period's postings and price changes in
between, the statements say exactly what the raw tables say: every line recomputed with SQL
from the entries on the partners' accounts and the prices the postings recorded (not through
app/settlement/statement.py), every posting settled once, the operator's take and each
partner's settlement account explained by statements and payments.

Then the edges: a price change within a period, a return posted in the period after its
purchase's, closes at once (in process and over HTTP, with the Idempotency-Key), daily and
weekly periods in Paris time, and what a partner key may not do.

Postings are always posted now, so a test closes "this month" by closing as if the clock were
just past the month's end (`close_at`), and a posting made after that close is late for the
next one. The moments are the ends of months, not `later(40)` and `later(80)`: late in a month,
40 days on is past the end of the next month too, and closing two months at once leaves the
postings made afterwards (dated this month) out of the next close's scan, which reads one day
before the last closed period only (nothing commits a day after it was posted). Where a test
needs a period that has ended by the real clock (a return posted in the period after its
purchase's, closes over HTTP that close something), it backdates the purchase (`backdate`).
"""

import asyncio
import itertools
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.agreements.test_prices import price_body, set_price
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import scalar
from tests.ledger.test_returns import (
    assert_problem,
    available,
    give_back,
    hold,
    ledger_ok,
    reverse,
)
from tests.settlement.helpers import (
    close_at,
    later,
    lines,
    priced_partner,
    statement,
    statements_of,
)

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The default monthly UTC periods, or (parametrized) daily or weekly ones in Paris."""
    length = getattr(request, "param", None)
    if length is None:
        return settings
    return settings.model_copy(
        update={"settlement_period": length, "program_timezone": "Europe/Paris"}
    )


def month_start(months_ahead: int) -> datetime:
    """UTC midnight of the first of the month `months_ahead` after this one (the default
    program's periods are UTC calendar months)."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + months_ahead
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def past_month_end(months_ahead: int) -> datetime:
    """A clock just past the end of the month `months_ahead` after this one (0: this month)."""
    return month_start(months_ahead + 1) + timedelta(hours=1)


def round_half_away(numerator: int, denominator: int) -> int:
    quotient = Decimal(numerator) / Decimal(denominator)
    return int(quotient.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def backdate(engine: AsyncEngine, transaction_id: str, moment: datetime) -> None:
    """Make a posting look as if it had been posted (and had happened) at `moment`: the only way
    to have a posting in a period that has ended by the real clock. The ledger refuses updates,
    so the test lifts its trigger for this one update, within the same database transaction."""
    async with engine.begin() as conn:
        await conn.execute(
            text("ALTER TABLE transactions DISABLE TRIGGER transactions_append_only")
        )
        updated = await conn.execute(
            text("UPDATE transactions SET posted_at = :m, occurred_at = :m WHERE id = :id"),
            {"m": moment, "id": transaction_id},
        )
        assert updated.rowcount == 1
        await conn.execute(text("ALTER TABLE transactions ENABLE TRIGGER transactions_append_only"))


# The random workload ---------------------------------------------------------------------------


@dataclass
class Shop:
    partner: dict[str, Any]
    till: dict[str, str]


@dataclass
class Posting:
    """A purchase (returnable), or a redemption or capture (refundable)."""

    id: str
    till: dict[str, str]
    kind: str
    amount: int
    phase: int
    corrected: int = 0
    """Returned, or refunded, so far."""
    reversed: bool = False


@dataclass
class Workload:
    client: AsyncClient
    operator: dict[str, str]
    rng: random.Random
    shops: list[Shop]
    cards: list[str]
    phase: int = 1
    postings: list[Posting] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def _pick(self, candidates: list[Posting]) -> Posting | None:
        if not candidates:
            return None
        # Corrections of the earlier period's postings first, once there is a later period.
        earlier = [p for p in candidates if p.phase < self.phase]
        if earlier and self.rng.random() < 0.7:
            return self.rng.choice(earlier)
        return self.rng.choice(candidates)

    async def buy(self, card: str | None = None) -> None:
        shop = self.rng.choice(self.shops)
        amount = self.rng.randint(100, 25_000)  # earns at least a point and 5 cents
        r = await purchase(
            self.client, shop.till, card or self.rng.choice(self.cards), amount, f"R-{uuid.uuid4()}"
        )
        assert r.status_code == 201, r.text
        self.postings.append(
            Posting(r.json()["transaction_id"], shop.till, "purchase", amount, self.phase)
        )
        self.done["purchase"] += 1

    async def _spendable(self) -> tuple[str, str, int] | None:
        card = self.rng.choice(self.cards)
        asset = self.rng.choice(["points", "cashback"])
        have = await available(self.client, self.operator, card)
        if min(have.values()) < 0 or have[asset] <= 0:  # a clawback debt, or nothing left
            return None
        return card, asset, have[asset]

    async def spend(self) -> None:
        found = await self._spendable()
        if found is None:
            return
        card, asset, have = found
        shop = self.rng.choice(self.shops)
        amount = self.rng.randint(1, have)
        r = await redeem(self.client, shop.till, card, amount, f"S-{uuid.uuid4()}", asset=asset)
        assert r.status_code == 201, r.text
        self.postings.append(
            Posting(r.json()["transaction_id"], shop.till, "redemption", amount, self.phase)
        )
        self.done["redemption"] += 1

    async def capture(self) -> None:
        found = await self._spendable()
        if found is None:
            return
        card, asset, have = found
        shop = self.rng.choice(self.shops)
        held = await hold(self.client, shop.till, card, self.rng.randint(1, have), asset)
        assert held.status_code == 201, held.text
        url = f"/v1/holds/{held.json()['id']}"
        if self.rng.random() < 0.2:  # a void: nothing reaches the partner's accounts
            r = await self.client.post(f"{url}/void", json={}, headers={**shop.till, **idem()})
            assert r.status_code == 200, r.text
            self.done["void"] += 1
            return
        amount = self.rng.randint(1, held.json()["amount"])
        r = await self.client.post(
            f"{url}/capture", json={"amount": amount}, headers={**shop.till, **idem()}
        )
        assert r.status_code == 200, r.text
        self.postings.append(
            Posting(r.json()["settled_by"], shop.till, "capture", amount, self.phase)
        )
        self.done["capture"] += 1

    async def give_back(self) -> None:
        chosen = self._pick(
            [
                p
                for p in self.postings
                if p.kind == "purchase" and not p.reversed and p.corrected < p.amount
            ]
        )
        if chosen is None:
            return
        left = chosen.amount - chosen.corrected
        amount = self.rng.randint(1, left if self.rng.random() < 0.2 else max(1, left // 2))
        r = await give_back(self.client, chosen.till, chosen.id, amount)
        assert r.status_code == 201, r.text
        chosen.corrected += amount
        self.done["return"] += 1

    async def refund(self) -> None:
        chosen = self._pick(
            [
                p
                for p in self.postings
                if p.kind != "purchase" and not p.reversed and p.corrected < p.amount
            ]
        )
        if chosen is None:
            return
        amount = self.rng.randint(1, chosen.amount - chosen.corrected)
        r = await self.client.post(
            f"/v1/redemptions/{chosen.id}/refunds",
            json={"amount": amount},
            headers={**chosen.till, **idem()},
        )
        assert r.status_code == 201, r.text
        chosen.corrected += amount
        self.done["refund"] += 1

    async def reverse(self) -> None:
        # A capture cannot be reversed; a returned or refunded posting neither.
        chosen = self._pick(
            [
                p
                for p in self.postings
                if p.kind != "capture" and not p.reversed and p.corrected == 0
            ]
        )
        if chosen is None:
            return
        r = await reverse(self.client, chosen.till, chosen.id)
        assert r.status_code == 201, r.text
        chosen.reversed = True
        self.done["reversal"] += 1

    async def run(self, steps: int) -> None:
        actions = [self.buy, self.spend, self.capture, self.give_back, self.refund, self.reverse]
        for _ in range(steps):
            await self.rng.choices(actions, weights=[4, 3, 1.5, 2, 1.5, 1])[0]()


async def pay_some(workload: Workload, engine: AsyncEngine) -> None:
    """A payment, received or sent, towards some of the statements."""
    rng = workload.rng
    for sid, partner_id in await rows(engine, "SELECT id, partner_id FROM statements ORDER BY id"):
        if rng.random() < 0.6:
            body = {
                "direction": rng.choice(["received", "sent"]),
                "amount": rng.randint(1, 5_000),
                "reference": f"BANK-{uuid.uuid4().hex[:16]}",
                **({"statement_id": str(sid)} if rng.random() < 0.7 else {}),
            }
            r = await workload.client.post(
                f"/v1/partners/{partner_id}/payments",
                json=body,
                headers={**workload.operator, **idem()},
            )
            assert r.status_code == 201, r.text


# The reconciliation, in SQL over the raw tables ----------------------------------------------

PARTNER_ACCOUNTS = "('partner_issued', 'partner_redeemed')"

# What each statement should say of movements: the entries on its partner's points and
# cashback accounts, in the transactions it settled, per (side, asset, correction or not, price,
# late or not), valued from the raw quantities: points at the price the posting recorded per
# 1,000 (PostgreSQL's round(numeric) rounds halves away from zero), cashback granted at its
# value if the partner funded cashback under its terms when the purchase was made (recorded on
# the purchase, carried by its corrections: else nothing between them, and a line of its own),
# cashback spent at its value. `value` is what the partner owes for issuing, and what it
# is owed for accepting.
EXPECTED_MOVEMENTS = f"""
    WITH moved AS (
        SELECT st.statement_id, s.partner_id, s.period_end, a.kind AS side, e.asset,
               t.type IN ('refund', 'reversal') AS corrected, t.points_price AS price,
               t.posted_at < s.period_start AS late,
               coalesce(t.cashback_funded, true) AS funds,
               count(DISTINCT t.id) AS postings, sum(e.amount) AS total
        FROM settled_transactions st
        JOIN statements s ON s.id = st.statement_id
        JOIN transactions t ON t.id = st.transaction_id
        JOIN entries e ON e.transaction_id = t.id
        JOIN accounts a ON a.id = e.account_id
        WHERE a.kind IN {PARTNER_ACCOUNTS} AND a.partner_id = s.partner_id
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    ), counted AS (
        SELECT m.*,
               CASE WHEN m.side = 'partner_issued' THEN -m.total ELSE m.total END AS quantity
        FROM moved m
    )
    SELECT statement_id, side = 'partner_issued' AS issued, asset, corrected, late,
           asset = 'cashback' AND side = 'partner_issued' AND NOT funds AS by_operator,
           CASE WHEN asset = 'points' THEN price END AS price, postings, quantity,
           CASE WHEN asset = 'points' THEN round(quantity::numeric * coalesce(price, 0) / 1000)
                WHEN side = 'partner_issued' AND NOT funds THEN 0
                ELSE quantity END AS value
    FROM counted
"""

# Each statement's partner's terms in force at its period's end: the fees.
STATEMENT_TERMS = """
    SELECT s.id, s.partner_id, s.period_start, s.net_amount,
           coalesce(pr.fee_bps, 0), coalesce(pr.fee_per_period, 0)
    FROM statements s
    LEFT JOIN LATERAL (
        SELECT * FROM partner_prices x
        WHERE x.partner_id = s.partner_id AND x.effective_from < s.period_end
        ORDER BY x.effective_from DESC LIMIT 1
    ) pr ON true
"""

# (statement, kind, late, price) -> [postings, quantity, amount], summed per key: a posting has
# one price. Points, cashback and fee lines are one per key (checked apart).
Key = tuple[Any, str, bool, int | None]


def add(into: dict[Key, list[int]], key: Key, postings: int, quantity: int, amount: int) -> None:
    sums = into.setdefault(key, [0, 0, 0])
    sums[0] += postings
    sums[1] += quantity
    sums[2] += amount


async def expected_lines(engine: AsyncEngine) -> tuple[dict[Key, list[int]], dict[str, int]]:
    """Every statement's lines recomputed from the raw tables, and the operator's take by its
    parts: points issued and accepted at their prices, cashback funded by partners and spent at
    them, fees."""
    expected: dict[Key, list[int]] = {}
    parts: dict[str, int] = defaultdict(int)
    issued_value: dict[Any, int] = defaultdict(int)
    for (
        sid,
        issued,
        asset,
        corrected,
        late,
        by_operator,
        price,
        postings,
        quantity,
        value,
    ) in await rows(engine, EXPECTED_MOVEMENTS):
        kind = f"{asset}_{'issued' if issued else 'accepted'}"
        kind += ("_by_operator" if by_operator else "") + ("_corrected" if corrected else "")
        value = int(value)
        add(
            expected, (sid, kind, late, price), postings, int(quantity), value if issued else -value
        )
        parts[f"{asset} {'issued' if issued else 'accepted'}"] += value
        if issued and asset == "points":
            issued_value[sid] += value
    for sid, _, _, _, fee_bps, fee_per_period in await rows(engine, STATEMENT_TERMS):
        if fee_bps and issued_value[sid] > 0:
            fee = round_half_away(issued_value[sid] * fee_bps, 10_000)
            add(expected, (sid, "fee_percentage", False, None), 0, issued_value[sid], fee)
            parts["fees"] += fee
        if fee_per_period:
            add(expected, (sid, "fee_fixed", False, None), 0, 0, fee_per_period)
            parts["fees"] += fee_per_period
    return expected, parts


async def actual_lines(engine: AsyncEngine) -> dict[Key, list[int]]:
    actual: dict[Key, list[int]] = {}
    for sid, kind, late, price, postings, quantity, amount in await rows(
        engine,
        "SELECT statement_id, kind, late, points_price, postings, quantity, amount "
        "FROM statement_lines",
    ):
        add(actual, (sid, kind, late, price), postings, quantity, amount)
    return actual


async def assert_reconciled(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    # (a) Each statement's net amount is the sum of its lines; it has lines; the net is posted
    # (partner's settlement account down by it) exactly when it is not zero.
    assert (
        await rows(
            engine,
            """
            SELECT s.id, s.net_amount, sum(l.amount), count(l.*) FROM statements s
            LEFT JOIN statement_lines l ON l.statement_id = s.id
            GROUP BY s.id HAVING s.net_amount <> coalesce(sum(l.amount), 0) OR count(l.*) = 0
            """,
        )
        == []
    )
    assert (
        await rows(
            engine,
            """
            SELECT s.id, s.net_amount, s.transaction_id FROM statements s
            WHERE (s.net_amount = 0) <> (s.transaction_id IS NULL)
               OR (s.transaction_id IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM entries e JOIN accounts a ON a.id = e.account_id
                   WHERE e.transaction_id = s.transaction_id AND e.asset = 'money'
                     AND a.kind = 'partner_settlement' AND a.partner_id = s.partner_id
                     AND e.amount = -s.net_amount))
            """,
        )
        == []
    )
    assert (
        await rows(
            engine,
            """
            SELECT statement_id, kind, late, points_price FROM statement_lines
            GROUP BY 1, 2, 3, 4 HAVING count(*) > 1
            """,
        )
        == []
    )

    # (b) Every posting that moved a partner's points or cashback account before the end of the
    # last closed period is settled (once: the primary key), on a statement of that partner
    # whose period ended after it was posted; nothing else is settled.
    unsettled = await rows(
        engine,
        f"""
        SELECT t.id, t.type, t.posted_at FROM transactions t
        WHERE EXISTS (SELECT 1 FROM entries e JOIN accounts a ON a.id = e.account_id
                      WHERE e.transaction_id = t.id AND a.kind IN {PARTNER_ACCOUNTS})
          AND t.posted_at < (SELECT max(period_end) FROM settlement_periods)
          AND NOT EXISTS (SELECT 1 FROM settled_transactions s WHERE s.transaction_id = t.id)
        """,
    )
    assert unsettled == []
    misplaced = await rows(
        engine,
        f"""
        SELECT st.transaction_id, t.type FROM settled_transactions st
        JOIN statements s ON s.id = st.statement_id
        JOIN transactions t ON t.id = st.transaction_id
        WHERE t.posted_at >= s.period_end
           OR NOT EXISTS (SELECT 1 FROM entries e JOIN accounts a ON a.id = e.account_id
                          WHERE e.transaction_id = t.id AND a.kind IN {PARTNER_ACCOUNTS})
           OR EXISTS (SELECT 1 FROM entries e JOIN accounts a ON a.id = e.account_id
                      WHERE e.transaction_id = t.id AND a.kind IN {PARTNER_ACCOUNTS}
                        AND a.partner_id <> s.partner_id)
        """,
    )
    assert misplaced == []
    # Per partner, what its statements counted is what its accounts moved.
    counted = await rows(
        engine,
        """
        SELECT s.partner_id, split_part(l.kind, '_', 1), split_part(l.kind, '_', 2),
               sum(l.quantity)
        FROM statement_lines l JOIN statements s ON s.id = l.statement_id
        WHERE l.kind NOT LIKE 'fee%' GROUP BY 1, 2, 3
        """,
    )
    moved = await rows(
        engine,
        f"""
        SELECT a.partner_id, e.asset,
               CASE a.kind WHEN 'partner_issued' THEN 'issued' ELSE 'accepted' END,
               sum(CASE a.kind WHEN 'partner_issued' THEN -e.amount ELSE e.amount END)
        FROM entries e JOIN accounts a ON a.id = e.account_id
        WHERE a.kind IN {PARTNER_ACCOUNTS}
          AND e.transaction_id IN (SELECT transaction_id FROM settled_transactions)
        GROUP BY 1, 2, 3
        """,
    )
    assert {r[:3]: r[3] for r in counted} == {r[:3]: r[3] for r in moved}

    # (c) Each line, points lines valued per (statement, kind, late, price) from the raw
    # entries, and the fees, as recomputed here.
    expected, parts = await expected_lines(engine)
    assert await actual_lines(engine) == expected

    # (d) The operator's take: what all statements net to is the points issued at their issue
    # prices, less the points accepted at their reimbursements, plus the cashback partners
    # funded, less the cashback spent at them, plus the fees; and it is what the operator's
    # settlement account holds, plus the payments made since (received less sent).
    total_net = int(await scalar(engine, "SELECT coalesce(sum(net_amount), 0) FROM statements"))
    take = (
        parts["points issued"]
        - parts["points accepted"]
        + parts["cashback issued"]
        - parts["cashback accepted"]
        + parts["fees"]
    )
    assert total_net == take
    paid = int(await scalar(engine, "SELECT coalesce(sum(amount), 0) FROM payments"))
    operator_account = await scalar(
        engine,
        """
        SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN accounts a ON a.id = e.account_id
        WHERE a.kind = 'operator_settlement' AND e.asset = 'money'
        """,
    )
    assert int(operator_account) == total_net - paid

    # (e) Each partner's settlement account is what its statements and payments say, and so is
    # the position the API reports.
    positions = await rows(
        engine,
        """
        SELECT p.id,
               (SELECT coalesce(sum(e.amount), 0) FROM entries e
                JOIN accounts a ON a.id = e.account_id
                WHERE a.kind = 'partner_settlement' AND a.partner_id = p.id
                  AND e.asset = 'money'),
               (SELECT coalesce(sum(net_amount), 0) FROM statements WHERE partner_id = p.id),
               (SELECT coalesce(sum(amount), 0) FROM payments WHERE partner_id = p.id)
        FROM partners p
        """,
    )
    for partner_id, account, net, payments in positions:
        assert account == -net + payments, partner_id
        r = await client.get(f"/v1/partners/{partner_id}/settlement", headers=operator)
        assert r.status_code == 200, r.text
        assert (r.json()["balance"], r.json()["statements"], r.json()["payments"]) == (
            account,
            net,
            payments,
        )

    # (f) The books hold.
    await ledger_ok(client, operator, engine)


async def assert_statements_where_due(engine: AsyncEngine) -> None:
    """A partner with a fixed fee has a statement for every closed period (under the terms in
    force at the period's end), whether anything moved or not."""
    missing = await rows(
        engine,
        """
        SELECT sp.period_start, p.id FROM settlement_periods sp
        JOIN partners p ON p.program_id = sp.program_id
        WHERE (SELECT x.fee_per_period FROM partner_prices x
               WHERE x.partner_id = p.id AND x.effective_from < sp.period_end
               ORDER BY x.effective_from DESC LIMIT 1) > 0
          AND NOT EXISTS (SELECT 1 FROM statements s
                          WHERE s.partner_id = p.id AND s.period_start = sp.period_start)
        """,
    )
    assert missing == []


def random_terms(rng: random.Random, **extra: Any) -> dict[str, Any]:
    return price_body(rng.randint(1, 2_500), rng.randint(1, 2_500), **extra)


def halving_terms(rng: random.Random, **extra: Any) -> dict[str, Any]:
    """Prices at which an odd number of points is worth half a minor unit more than a whole
    one: the rounding of halves (away from zero, for corrections too) shows."""
    return price_body(rng.choice([500, 1_500, 2_500]), rng.choice([500, 1_500, 2_500]), **extra)


@pytest.mark.parametrize("seed", [7, 1_234, 90_210])
async def test_statements_reconcile_with_the_ledger_over_random_workloads(
    seed: int,
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    rng = random.Random(seed)
    shops = [Shop(*await partner_with_key(app, client, operator)) for _ in range(4)]
    funding, fees_bps, fixed, _no_price = shops
    terms = {
        funding.partner["id"]: halving_terms(rng, fee_bps=rng.randint(1, 400)),
        fees_bps.partner["id"]: random_terms(
            rng, funds_cashback=False, fee_per_period=rng.randint(1, 3_000)
        ),
        fixed.partner["id"]: random_terms(
            rng, fee_bps=rng.randint(1, 400), fee_per_period=rng.randint(1, 3_000)
        ),
    }  # and the fourth has no price: its points are worth nothing between them
    for partner_id, body in terms.items():
        await set_price(client, operator, partner_id, body)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(4)]
    work = Workload(client, operator, rng, shops, cards)
    for card in cards:
        await work.buy(card)

    await work.run(40)
    [(start, end, made)] = await close_at(app, past_month_end(0))

    assert (start, end) == (month_start(0), month_start(1))
    assert made == await scalar(engine, "SELECT count(*) FROM statements") > 0
    await pay_some(work, engine)
    # The next period: corrections of the first one's postings (at the prices they recorded),
    # new prices from now on halfway through, and new fees from a date within the next period
    # (after the closed one: terms never apply to the past), in force at its end.
    work.phase = 2
    await work.run(15)
    for partner_id, body in terms.items():
        await set_price(client, operator, partner_id, {**body, **random_terms(rng)})
    await set_price(
        client,
        operator,
        fixed.partner["id"],
        {
            **terms[fixed.partner["id"]],
            "effective_from": (month_start(1) + timedelta(days=10)).isoformat(),
            "fee_bps": rng.randint(1, 400),
            "fee_per_period": rng.randint(1, 3_000),
        },
    )
    await work.run(15)
    [(start2, end2, made2)] = await close_at(app, past_month_end(1))
    assert (start2, end2) == (month_start(1), month_start(2))
    assert made2 == await scalar(
        engine, "SELECT count(*) FROM statements WHERE period_start = :s", s=start2
    )
    await pay_some(work, engine)

    # The workload did what it is meant to test.
    assert all(work.done[k] for k in ("purchase", "redemption", "capture", "return", "refund"))
    corrections_of_the_first_period = await scalar(
        engine,
        """
        SELECT count(*) FROM transactions t JOIN transactions o ON o.id = t.corrects_id
        WHERE t.type IN ('refund', 'reversal')
          AND EXISTS (SELECT 1 FROM settled_transactions so JOIN statements s
                      ON s.id = so.statement_id WHERE so.transaction_id = o.id
                      AND s.period_start = :start)
        """,
        start=start,
    )
    assert corrections_of_the_first_period > 0
    # The late lines have both the first prices (corrections) and the new ones.
    assert await scalar(
        engine, "SELECT count(DISTINCT points_price) FROM statement_lines WHERE late"
    ) > len(terms)
    await assert_reconciled(client, operator, engine)
    await assert_statements_where_due(engine)


# Prices and periods ----------------------------------------------------------------------------


async def test_a_price_change_within_a_period_makes_a_line_per_price(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    await set_price(client, operator, shop["id"], price_body(800, 650))
    card = (await issue_card(client, operator))["card_number"]
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201  # 100 points
    assert (await redeem(client, till, card, 30, "S-1")).status_code == 201
    await set_price(client, operator, shop["id"], price_body(900, 550))
    assert (await purchase(client, till, card, 20_000, "R-2")).status_code == 201  # 200 points
    assert (await redeem(client, till, card, 41, "S-2")).status_code == 201

    [(_, _, made)] = await close_at(app, past_month_end(0))

    assert made == 1
    [listed] = await statements_of(client, operator, shop["id"])
    read = await statement(client, operator, listed["id"])
    points = [line for line in lines(read) if line[0].startswith("points")]
    assert points == [
        ("points_accepted", False, 550, 1, 41, -23),  # 22.55
        ("points_accepted", False, 650, 1, 30, -20),  # 19.5, half away from zero
        ("points_issued", False, 800, 1, 100, 80),
        ("points_issued", False, 900, 1, 200, 180),
    ]
    # 5 % cashback of both purchases (read per price too, so it may come in two lines).
    cashback = [line for line in lines(read) if line[0].startswith("cashback")]
    assert {line[0] for line in cashback} == {"cashback_issued"}
    assert sum(line[4] for line in cashback) == sum(line[5] for line in cashback) == 1_500
    assert sum(line[3] for line in cashback) == 2
    assert read["net_amount"] == 1_500 + 80 + 180 - 23 - 20
    await assert_reconciled(client, operator, engine)


async def test_a_return_in_the_next_period_is_corrected_there_at_the_first_price(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till, card = await priced_partner(app, client, operator)
    bought = await purchase(client, till, card, 10_000, "R-1")  # 100 points, 500 cashback
    assert bought.status_code == 201, bought.text
    bought_id = bought.json()["transaction_id"]
    # Bought last month: that period has ended by the real clock.
    await backdate(engine, bought_id, month_start(0) - timedelta(hours=1))
    assert await close_at(app, datetime.now(UTC)) == [(month_start(-1), month_start(0), 1)]
    await set_price(client, operator, shop["id"], price_body(900, 650))

    returned = await give_back(client, till, bought_id, 4_000)  # 40 % of the goods
    assert returned.status_code == 201, returned.text
    assert (await purchase(client, till, card, 10_000, "R-2")).status_code == 201
    assert await close_at(app, past_month_end(0)) == [(month_start(0), month_start(1), 1)]

    first, second = sorted(
        await statements_of(client, operator, shop["id"]), key=lambda s: s["period_start"]
    )
    assert lines(await statement(client, operator, first["id"])) == [
        ("cashback_issued", False, None, 1, 500, 500),
        ("points_issued", False, 800, 1, 100, 80),
    ]
    # Posted this period, so not late; valued at the price the purchase recorded last month.
    assert lines(await statement(client, operator, second["id"])) == [
        ("cashback_issued", False, None, 1, 500, 500),
        ("cashback_issued_corrected", False, None, 1, -200, -200),
        ("points_issued", False, 900, 1, 100, 90),
        ("points_issued_corrected", False, 800, 1, -40, -32),
    ]
    assert second["net_amount"] == 500 - 200 + 90 - 32
    await assert_reconciled(client, operator, engine)


async def test_returned_cashback_is_credited_under_the_terms_it_was_granted_under(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    await set_price(client, operator, shop["id"], price_body(800, 600, funds_cashback=True))
    card = (await issue_card(client, operator))["card_number"]
    bought = await purchase(client, till, card, 10_000, "R-1")  # 100 points, 500 cashback
    assert bought.status_code == 201, bought.text
    await close_at(app, past_month_end(0))
    [paid] = await statements_of(client, operator, shop["id"])
    assert paid["net_amount"] == 500 + 80  # the partner pays for the cashback it granted
    # From now on the operator funds the partner's cashback.
    await set_price(client, operator, shop["id"], price_body(800, 600, funds_cashback=False))

    returned = await give_back(client, till, bought.json()["transaction_id"], 10_000)
    assert returned.status_code == 201, returned.text
    await close_at(app, past_month_end(1))

    newest = (await statements_of(client, operator, shop["id"]))[0]
    assert lines(await statement(client, operator, newest["id"])) == [
        ("cashback_issued_corrected", True, None, 1, -500, -500),
        ("points_issued_corrected", True, 800, 1, -100, -80),
    ]
    # The purchase never happened: nothing is owed for it either way.
    position = await client.get(f"/v1/partners/{shop['id']}/settlement", headers=operator)
    assert position.json()["balance"] == 0


def in_paris(moment: datetime) -> datetime:
    return moment.astimezone(PARIS)


def paris_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=PARIS).astimezone(UTC)


def assert_paris_periods(
    closed: list[Any], length: str, posted: datetime | None, moment: datetime
) -> None:
    """Consecutive, from the one `posted` falls in (or where the last close stopped), each from
    a Paris midnight (a Monday's, weekly) to the next day's (or week's): 24 hours (7 days)
    except across a change of clock, which the difference of UTC offsets accounts for. They
    end by `moment`, and the next one would not."""
    days = 1 if length == "daily" else 7
    for (_, end, _), (next_start, _, _) in itertools.pairwise(closed):
        assert end == next_start
    for start, end, _ in closed:
        local_start, local_end = in_paris(start), in_paris(end)
        assert local_start.time().isoformat() == local_end.time().isoformat() == "00:00:00"
        assert local_end.date() == local_start.date() + timedelta(days=days)
        if length == "weekly":
            assert local_start.weekday() == 0
        offsets = local_start.utcoffset() - local_end.utcoffset()  # type: ignore[operator]
        assert end - start == timedelta(days=days) + offsets
    if posted is not None:
        assert closed[0][0] <= posted < closed[0][1]
    assert closed[-1][1] <= moment
    next_day = in_paris(closed[-1][1]).date() + timedelta(days=days)
    assert paris_midnight(next_day) > moment


@pytest.mark.parametrize("settings", ["daily", "weekly"], indirect=True)
async def test_daily_and_weekly_periods_run_from_paris_midnights(
    settings: Settings,
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    length = settings.settlement_period
    _shop, till, card = await priced_partner(app, client, operator)
    bought = await purchase(client, till, card, 10_000, "R-1")
    assert bought.status_code == 201, bought.text
    posted = datetime.fromisoformat(bought.json()["posted_at"])

    moment = later(3 if length == "daily" else 14)
    first = await close_at(app, moment)

    assert first, "a whole day (or week) has passed by then"
    assert_paris_periods(first, length, posted, moment)
    # The purchase's period has its statement; the ones after it, with nothing moved, none.
    assert [made for _, _, made in first] == [1] + [0] * (len(first) - 1)

    # Months on, across at least one change of clock (they are at most 7 months apart).
    far = later(230)
    rest = await close_at(app, far)
    assert rest[0][0] == first[-1][1]
    assert_paris_periods(rest, length, None, far)
    assert any(
        end - start != timedelta(days=1 if length == "daily" else 7) for start, end, _ in rest
    )
    assert [made for _, _, made in rest] == [0] * len(rest)
    assert await scalar(engine, "SELECT count(*) FROM settlement_periods") == len(first) + len(rest)
    assert await scalar(engine, "SELECT count(*) FROM statements") == 1
    await assert_reconciled(client, operator, engine)


# Closing at once, and over HTTP ----------------------------------------------------------------


async def test_closes_at_once_with_postings_going_on_settle_each_posting_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shops = [await partner_with_key(app, client, operator) for _ in range(3)]
    for i, (shop, _) in enumerate(shops):
        await set_price(client, operator, shop["id"], price_body(700 + i, 600 + i))
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(3)]
    for card in cards:
        for _, till in shops:
            assert (
                await purchase(client, till, card, 5_000, f"R-{uuid.uuid4()}")
            ).status_code == 201

    # This month closes three times at once while tills keep posting.
    closes = [close_at(app, past_month_end(0)) for _ in range(3)]
    posts = [
        purchase(client, till, card, 3_000, f"R-{uuid.uuid4()}")
        for _, till in shops
        for card in cards
    ]
    results = await asyncio.gather(*closes, *posts)
    closed, posted = results[: len(closes)], results[len(closes) :]

    assert all(r.status_code == 201 for r in posted)
    assert sorted(len(c) for c in closed) == [0, 0, 1]
    [(start, end, made)] = next(c for c in closed if c)
    assert (start, end, made) == (month_start(0), month_start(1), len(shops))
    # Then the next month, twice at once with this month again: what committed after this
    # month closed is on the next month's statements, as late.
    again = await asyncio.gather(
        close_at(app, past_month_end(1)), close_at(app, past_month_end(1)), close_at(app, end)
    )
    assert sorted(len(c) for c in again) == [0, 0, 1]
    [(next_start, next_end, _)] = next(c for c in again if c)
    assert (next_start, next_end) == (end, month_start(2))
    assert await scalar(engine, "SELECT count(*) FROM settlement_periods") == 2
    assert made == await scalar(
        engine, "SELECT count(*) FROM statements WHERE period_start = :s", s=start
    )
    await assert_reconciled(client, operator, engine)


async def test_closes_over_http_run_once_per_idempotency_key(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    url = "/v1/settlements/close"

    def close(key: str, body: dict[str, Any] | None = None) -> Any:
        return client.post(url, json=body or {}, headers={**operator, "Idempotency-Key": key})

    _shop, till, card = await priced_partner(app, client, operator)
    bought = await purchase(client, till, card, 10_000, "R-1")
    assert bought.status_code == 201, bought.text
    # Nothing has ended by the real clock yet: closes at once, each with its key, close nothing.
    nothing = await asyncio.gather(*(close(f"early-{i}") for i in range(3)))
    assert [(r.status_code, r.json()) for r in nothing] == [(200, {"closed": []})] * 3
    # Posted last month, which has ended: four closes at once (two with one key) close it once.
    await backdate(engine, bought.json()["transaction_id"], month_start(0) - timedelta(hours=1))
    keys = ["close-a", "close-b", "close-b", "close-c"]

    answers: list[Response] = await asyncio.gather(*(close(k) for k in keys))

    assert [r.status_code for r in answers] == [200] * 4
    # The two with one key: one ran, the other waited for it and replayed its answer.
    assert answers[1].json() == answers[2].json()
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in answers[1:3]) == ["", "true"]
    by_key = {k: r.json() for k, r in zip(keys, answers, strict=True)}
    [(key, won)] = [(k, answer) for k, answer in by_key.items() if answer["closed"]]
    [period] = won["closed"]
    assert datetime.fromisoformat(period["period_start"]) == month_start(-1)
    assert datetime.fromisoformat(period["period_end"]) == month_start(0)
    assert period["statements"] == 1
    assert await scalar(engine, "SELECT count(*) FROM settlement_periods") == 1
    assert await scalar(engine, "SELECT count(*) FROM statements") == 1
    # A retry replays its first answer (closing afresh would close nothing now).
    retried = await close(key)
    assert retried.status_code == 200
    assert retried.json() == won and retried.headers.get("Idempotent-Replayed") == "true"
    # The same key with another body is refused; a new key closes nothing more.
    assert_problem(
        await close(key, {"through": datetime.now(UTC).isoformat()}), 422, "idempotency_key_reused"
    )
    assert (await close("close-later")).json() == {"closed": []}
    assert_problem(
        await client.post(url, json={}, headers=operator), 400, "idempotency_key_required"
    )
    assert await scalar(engine, "SELECT count(*) FROM statements") == 1
    await assert_reconciled(client, operator, engine)


async def test_a_partner_key_neither_closes_nor_records_payments_nor_reads_others(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    other, other_till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201
    assert (await purchase(client, other_till, card, 10_000, "R-2")).status_code == 201
    await close_at(app, past_month_end(0))
    [own] = await statements_of(client, till)
    [theirs] = await statements_of(client, other_till)
    before = await rows(
        engine,
        "SELECT count(*) FROM transactions UNION ALL SELECT count(*) FROM settlement_periods",
    )

    assert_problem(
        await client.post("/v1/settlements/close", json={}, headers={**till, **idem()}),
        403,
        "forbidden",
    )
    payment = {"direction": "received", "amount": 100, "reference": "BANK-1"}
    for partner_id in (shop["id"], other["id"]):
        assert_problem(
            await client.post(
                f"/v1/partners/{partner_id}/payments", json=payment, headers={**till, **idem()}
            ),
            403,
            "forbidden",
        )
    for path in (f"/v1/statements/{theirs['id']}", f"/v1/statements/{theirs['id']}/csv"):
        assert_problem(await client.get(path, headers=till), 404, "statement_not_found")
    assert_problem(
        await client.get(f"/v1/partners/{other['id']}/settlement", headers=till),
        404,
        "partner_not_found",
    )
    assert (await statement(client, till, own["id"]))["partner_id"] == shop["id"]
    assert await statements_of(client, till, other["id"]) == [own]
    assert (
        await rows(
            engine,
            "SELECT count(*) FROM transactions UNION ALL SELECT count(*) FROM settlement_periods",
        )
        == before
    )
    assert await scalar(engine, "SELECT count(*) FROM payments") == 0
