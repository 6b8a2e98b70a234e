"""The round trips of a posting are part of its design (docs/ARCHITECTURE.md): a group of
postings costs a fixed number of them whatever its size. This keeps it from growing."""

import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.keys import hash_key
from app.idempotency.service import request_fingerprint
from app.ledger.engine import GroupItem, Outcome, post_group
from app.ledger.schemas import PurchaseAccrualCreate, RedemptionCreate
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key


async def _run_counting(
    app: FastAPI, engine: AsyncEngine, items: list[GroupItem]
) -> tuple[list[Outcome], list[str]]:
    seen: list[str] = []

    def log(record: Any) -> None:
        seen.append(" ".join(record.query.split())[:50])

    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        raw.add_query_logger(log)
        try:
            async with raw.transaction():
                outcomes = await post_group(raw, app.state.program, app.state.settings, items)
        finally:
            raw.remove_query_logger(log)
    return outcomes, seen


async def _items(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], count: int
) -> list[GroupItem]:
    _partner, till = await partner_with_key(app, client, operator)
    key = till["Authorization"].removeprefix("Bearer ")
    items = []
    for i in range(count):
        card = await funded_card(client, operator, 100)
        request: Any
        if i % 2:
            request = RedemptionCreate(
                card_number=card["card_number"], asset="points", amount=5, reference=f"r{i}"
            )
        else:
            request = PurchaseAccrualCreate(
                kind="purchase",
                card_number=card["card_number"],
                amount=1000,
                currency="EUR",
                reference=f"p{i}",
            )
        idem = str(uuid.uuid4())
        items.append(
            GroupItem(
                request=request,
                key_hash=hash_key(key),
                idempotency_key=idem,
                fingerprint=request_fingerprint("POST", "/v1/x", request),
            )
        )
    return items


async def test_a_group_costs_the_same_statements_whatever_its_size(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    one, seen_one = await _run_counting(app, engine, await _items(app, client, operator, 1))
    many, seen_many = await _run_counting(app, engine, await _items(app, client, operator, 40))

    assert [o.status for o in one] == [201]
    assert [o.status for o in many] == [201] * 40
    # BEGIN, auth and claim keys, context and lock cards, write everything, COMMIT
    assert len(seen_one) == 5, seen_one
    assert len(seen_many) == 5, seen_many
    assert seen_many[0] == "BEGIN;" and seen_many[-1] == "COMMIT;"


async def test_replays_cost_one_more_statement_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    items = await _items(app, client, operator, 4)
    first, _ = await _run_counting(app, engine, items)
    again, seen = await _run_counting(app, engine, items)

    assert [o.body for o in again] == [o.body for o in first]
    assert all(o.replayed for o in again)
    # BEGIN, auth and claim keys (all taken), fetch the stored answers, COMMIT: no context,
    # no lock, no write
    assert len(seen) == 4, seen
