"""Use cases of the ledger: post (through the group-commit batcher), and read what a card has
and did. The posting rules live in rules.py, the set-based posting in engine.py."""

import base64
import uuid
from datetime import UTC, datetime

import asyncpg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.responses import Response

from app.auth.deps import Principal
from app.auth.keys import hash_key
from app.cards.errors import CardNotFound
from app.core.config import Settings
from app.core.errors import RetryLater, Unauthorized
from app.core.jsonio import dumps
from app.expiry.policy import due, next_expiry
from app.expiry.service import lots_of
from app.idempotency.service import answer_response
from app.ledger import hot_repository, repository
from app.ledger.batcher import PostingBatcher
from app.ledger.engine import GroupItem, Outcome, RetryGroup, post_group
from app.ledger.errors import (
    InvalidCursor,
    TransactionNotFound,
)
from app.ledger.rules import PostingRequest
from app.ledger.schemas import (
    AccrualPreviewCreate,
    AccrualPreviewRead,
    AssetAmounts,
    BalanceRead,
    CardTransactionPage,
    CardTransactionRead,
    EntryRead,
    Expiring,
    TransactionRead,
)
from app.programs.service import ProgramContext


async def post_one(
    batcher: PostingBatcher,
    request: PostingRequest,
    *,
    api_key: str,
    idempotency_key: str,
    fingerprint: bytes,
) -> Outcome:
    """One posting request, committed with whatever others are in flight (group commit)."""
    item = GroupItem(
        request=request,
        key_hash=hash_key(api_key),
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    return await batcher.submit(item)


async def preview(
    engine: AsyncEngine,
    program: ProgramContext,
    settings: Settings,
    api_key: str,
    req: AccrualPreviewCreate,
) -> AccrualPreviewRead | Response:
    """The same rules as a posting, in a transaction that is rolled back: what the purchase
    would earn now (a refusal is answered as the posting would be refused)."""
    item = GroupItem(request=req.as_purchase(), key_hash=hash_key(api_key))
    async with engine.connect() as conn:
        raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
        transaction = raw.transaction()
        await transaction.start()
        try:
            [outcome] = await post_group(raw, program, settings, [item], dry_run=True)
        except RetryGroup as exc:
            raise RetryLater() from exc
        finally:
            await transaction.rollback()
    if outcome.payload is None:
        return answer_response(outcome.status, outcome.body, False, outcome.headers)
    answer = outcome.payload
    return AccrualPreviewRead(
        card_number=answer["card_number"],
        partner_id=answer["partner_id"],
        eligible_amount=answer["eligible_amount"],
        earned=answer["earned"],
        applied=answer["applied"],
        tier=answer["tier"],
        currency=answer["currency"],
    )


async def balance_for_key(
    engine: AsyncEngine, program: ProgramContext, api_key: str, card_number: str
) -> BalanceRead:
    """The balance check a till makes before every sale: one statement, no transaction."""
    async with engine.connect() as conn:
        raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
        row = await hot_repository.balance_for_key(
            raw, hash_key(api_key), program.id, card_number, program.timezone
        )
    if row is None:
        raise Unauthorized("The API key is unknown or revoked.")
    if row["card_number"] is None:
        raise CardNotFound()
    available, held = {}, {}
    lapsed = row["lapsed"] or (0, 0)
    for index, asset in enumerate(("points", "cashback")):
        available[asset] = row[asset] + lapsed[index]
        held[asset] = row[f"{asset}_held"] - lapsed[index]
    # Pending points past their return window are spendable before anything released them.
    matured = row["matured"] or 0
    available["points"] += matured
    pending = row["points_pending"] - matured
    # Points whose lots ran out are gone even before anything posted their expiry.
    lots = lots_of(row) if row["amounts"] else []
    reserved = held["points"] + pending
    available["points"] -= due(available["points"], reserved, lots, row["today"], inactive=False)
    upcoming = next_expiry(available["points"], reserved, lots, row["today"])
    return BalanceRead(
        card_number=row["card_number"],
        status=row["status"],
        **available,
        held=AssetAmounts(**held),
        pending=AssetAmounts(points=pending, cashback=0),
        total=AssetAmounts(
            points=available["points"] + held["points"] + pending,
            cashback=available["cashback"] + held["cashback"],
        ),
        debt=AssetAmounts(**{a: max(0, -available[a]) for a in available}),
        expiring=None if upcoming is None else Expiring(points=upcoming.points, on=upcoming.on),
        currency=program.currency,
    )


def json_response(answer: BaseModel) -> Response:
    return Response(dumps(answer.model_dump(mode="json")), media_type="application/json")


def encode_cursor(posted_at: datetime, transaction_id: uuid.UUID) -> str:
    raw = f"{posted_at.isoformat()}|{transaction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        posted_at, transaction_id = raw.split("|")
        parsed = datetime.fromisoformat(posted_at)
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        # Normalizing here catches offsets that push a date past year 1 or 9999.
        return parsed.astimezone(UTC), uuid.UUID(transaction_id)
    except (ValueError, OverflowError) as exc:
        raise InvalidCursor() from exc


async def card_history(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    card_number: str,
    cursor: str | None,
    limit: int,
) -> CardTransactionPage:
    before = decode_cursor(cursor) if cursor else None
    card_id = await repository.card_id(conn, program.id, card_number)
    if card_id is None:
        raise CardNotFound()
    rows = await repository.card_history(
        conn,
        card_id=card_id,
        # A partner sees what happened at its own tills only.
        partner_id=None if principal.is_operator else principal.partner_id,
        before=before,
        limit=limit + 1,
    )
    items = [CardTransactionRead(**r._mapping) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.posted_at, last.id)
    return CardTransactionPage(items=items, next_cursor=next_cursor)


async def get_transaction(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, transaction_id: uuid.UUID
) -> TransactionRead:
    row = await repository.transaction(conn, program.id, transaction_id)
    # To a partner, another partner's transaction does not exist (404, not 403: no probing).
    if row is None or (not principal.is_operator and row.partner_id != principal.partner_id):
        raise TransactionNotFound()
    entries = await repository.transaction_entries(conn, transaction_id)
    return TransactionRead(**row._mapping, entries=[EntryRead(**e._mapping) for e in entries])
