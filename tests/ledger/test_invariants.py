"""A seeded random workload of purchases, awards and redemptions, run in concurrent batches;
afterwards the books are checked with SQL and against what the answers said."""

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.api_keys import bearer, insert_api_key
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.ledger.helpers_ledger import api_balance, check_books, system_account_totals

pytestmark = pytest.mark.concurrency

SEED = 20_261_123
OPERATIONS = 320
CARDS = 10

# (earn points, per amount, cashback bps, can redeem)
PARTNER_RULES = [(1, 100, 500, True), (3, 1_000, 250, True), (2, 50, 0, False)]


@dataclass
class Partner:
    id: uuid.UUID
    points: int
    per_amount: int
    cashback_bps: int
    can_redeem: bool
    tills: list[dict[str, str]]

    def earn(self, amount: int) -> tuple[int, int]:
        return amount * self.points // self.per_amount, amount * self.cashback_bps // 10_000


@dataclass
class Op:
    kind: str  # purchase, tiny, award, redeem, redeem_refused_partner
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    card: str
    partner: Partner | None
    type: str  # the transaction type it would post
    response: Response | None = field(default=None)

    @property
    def group(self) -> tuple[uuid.UUID | None, str, str]:
        """What the unique reference index keys on."""
        return (self.partner.id if self.partner else None, self.type, self.body["reference"])


def _workload(
    rng: random.Random, cards: list[str], partners: list[Partner], operator: dict[str, str]
) -> list[Op]:
    ops: list[Op] = []
    earning = list(partners)
    redeeming = [p for p in partners if p.can_redeem]
    closed = [p for p in partners if not p.can_redeem]
    purchases: list[Op] = []
    for i in range(OPERATIONS):
        ref = f"mix-{i}"
        card = rng.choice(cards)
        roll = rng.random()
        if roll < 0.40 or (roll < 0.45 and not purchases):
            partner = rng.choice(earning)
            kind = "tiny" if rng.random() < 0.1 else "purchase"
            amount = rng.randint(1, 19) if kind == "tiny" else rng.randint(100, 40_000)
            body: dict[str, Any] = {
                "kind": "purchase",
                "card_number": card,
                "amount": amount,
                "currency": "EUR",
                "reference": ref,
            }
            if rng.random() < 0.2:  # the operator posting for the partner
                headers = operator
                body["partner_id"] = str(partner.id)
            else:
                headers = rng.choice(partner.tills)
            op = Op(kind, "/v1/accruals", body, headers, card, partner, "accrual")
            if kind == "purchase":
                purchases.append(op)
        elif roll < 0.45:
            # A second posting of an earlier receipt at the same partner (maybe another till,
            # maybe in the same concurrent batch): the reference index lets one through.
            first = rng.choice(purchases)
            assert first.partner is not None
            body = {**first.body, "card_number": card, "amount": rng.randint(100, 40_000)}
            headers = rng.choice(first.partner.tills)
            body.pop("partner_id", None)
            op = Op("purchase", "/v1/accruals", body, headers, card, first.partner, "accrual")
        elif roll < 0.58:
            body = {
                "kind": "award",
                "card_number": card,
                "points": rng.randint(1, 400),
                "reason": "mixed workload",
                "reference": ref,
            }
            op = Op("award", "/v1/accruals", body, operator, card, None, "award")
        elif roll < 0.95:
            asset = "points" if rng.random() < 0.6 else "cashback"
            amount = rng.randint(1, 600) if asset == "points" else rng.randint(1, 800)
            body = {"card_number": card, "asset": asset, "amount": amount, "reference": ref}
            where = rng.random()
            partner_or_none: Partner | None
            if where < 0.3:  # spent with the operator itself
                partner_or_none, headers = None, operator
            elif where < 0.45:  # the operator posting for a partner
                partner_or_none, headers = rng.choice(redeeming), operator
                body["partner_id"] = str(partner_or_none.id)
            else:
                partner_or_none = rng.choice(redeeming)
                headers = rng.choice(partner_or_none.tills)
            op = Op("redeem", "/v1/redemptions", body, headers, card, partner_or_none, "redemption")
        else:
            partner = rng.choice(closed)
            body = {"card_number": card, "asset": "points", "amount": 1, "reference": ref}
            op = Op(
                "redeem_refused_partner",
                "/v1/redemptions",
                body,
                rng.choice(partner.tills),
                card,
                partner,
                "redemption",
            )
        ops.append(op)
    return ops


async def _run(client: AsyncClient, op: Op) -> None:
    op.response = await client.post(op.path, json=op.body, headers={**op.headers, **idem()})


async def test_random_mixed_workload_keeps_the_books(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    rng = random.Random(SEED)
    partners: list[Partner] = []
    for points, per_amount, bps, can_redeem in PARTNER_RULES:
        created, till = await partner_with_key(
            app,
            client,
            operator,
            earn_rate={"points": points, "per_amount": per_amount},
            cashback_bps=bps,
            can_redeem=can_redeem,
        )
        second = bearer(await insert_api_key(app, role="partner", partner_id=created["id"]))
        partners.append(
            Partner(uuid.UUID(created["id"]), points, per_amount, bps, can_redeem, [till, second])
        )
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(CARDS)]
    ops = _workload(rng, cards, partners, operator)

    # Concurrent batches: each batch at once, batches one after the other.
    start = 0
    while start < len(ops):
        size = rng.randint(15, 30)
        await asyncio.gather(*(_run(client, op) for op in ops[start : start + size]))
        start += size

    # What every answer says, and what the ledger should therefore hold.
    tracked: dict[str, list[int]] = {card: [0, 0] for card in cards}
    issued: Counter[tuple[str, uuid.UUID | None, str]] = Counter()
    redeemed: Counter[tuple[str, uuid.UUID | None, str]] = Counter()
    posted_ids: set[str] = set()
    outcomes: Counter[tuple[str, int]] = Counter()
    wins: dict[tuple[uuid.UUID | None, str, str], int] = defaultdict(int)
    for op in ops:
        r = op.response
        assert r is not None
        outcomes[(op.kind, r.status_code)] += 1
        answer = r.json()
        assert r.status_code < 500, r.text
        if op.kind == "tiny":
            assert r.status_code == 200, r.text
            assert answer["transaction_id"] is None
            assert answer["earned"] == {"points": 0, "cashback": 0}
            continue
        if op.kind == "redeem_refused_partner":
            assert (r.status_code, answer["code"]) == (409, "partner_cannot_redeem"), r.text
            continue
        if r.status_code != 201:
            if op.kind == "redeem":
                assert (r.status_code, answer["code"]) == (422, "insufficient_balance"), r.text
                assert (answer["asset"], answer["requested"]) == (
                    op.body["asset"],
                    op.body["amount"],
                )
            else:
                assert op.kind == "purchase", r.text
                assert (r.status_code, answer["code"]) == (409, "duplicate_reference"), r.text
            continue
        wins[op.group] += 1
        posted_ids.add(answer["transaction_id"])
        totals = tracked[op.card]
        if op.kind == "purchase":
            assert op.partner is not None
            points, cashback = op.partner.earn(op.body["amount"])
            assert answer["earned"] == {"points": points, "cashback": cashback}, op.body
            assert answer["partner_id"] == str(op.partner.id)
            totals[0] += points
            totals[1] += cashback
            issued[("partner_issued", op.partner.id, "points")] += points
            issued[("partner_issued", op.partner.id, "cashback")] += cashback
        elif op.kind == "award":
            assert answer["earned"] == {"points": op.body["points"], "cashback": 0}
            totals[0] += op.body["points"]
            issued[("operator_issued", None, "points")] += op.body["points"]
        else:
            asset, amount = op.body["asset"], op.body["amount"]
            assert (answer["asset"], answer["amount"]) == (asset, amount)
            assert answer["balance"][asset] >= 0
            totals[0 if asset == "points" else 1] -= amount
            if op.partner is None:
                redeemed[("operator_redeemed", None, asset)] += amount
            else:
                redeemed[("partner_redeemed", op.partner.id, asset)] += amount

    # The workload did what it was meant to: every path taken, refusals included.
    assert outcomes[("redeem", 201)] > 0
    assert outcomes[("redeem", 422)] > 0
    assert outcomes[("tiny", 200)] > 0
    assert outcomes[("purchase", 409)] > 0
    assert outcomes[("redeem_refused_partner", 409)] > 0
    assert sum(outcomes.values()) == OPERATIONS

    # The API's balances are the sums of the answers.
    for card in cards:
        assert list(await api_balance(client, operator, card)) == tracked[card], card

    # The books, with SQL.
    entry_counts = await check_books(engine)
    assert sum(entry_counts.values()) > 0

    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT id, partner_id, type, reference FROM transactions"))
        ).all()
    # Exactly the transactions the 201 answers announced: none lost, none extra.
    assert {str(r.id) for r in rows} == posted_ids
    assert len(rows) == len(posted_ids)
    # A reference posts at most once per partner and type; every refusal (insufficient
    # balance, duplicate, closed partner, nothing earned) left no transaction behind.
    in_db = Counter((r.partner_id, r.type, r.reference) for r in rows)
    for op in ops:
        assert in_db[op.group] == wins[op.group] <= 1, (op.kind, op.body, op.response)

    # The partners' and the operator's accounts mirror what the cards earned and spent.
    systems = await system_account_totals(engine)
    for key, total in systems.items():
        kind = key[0]
        if kind.endswith("_issued"):
            assert total == -issued[key], key
        else:
            assert total == redeemed[key], key
    assert set(issued) | set(redeemed) <= set(systems)
