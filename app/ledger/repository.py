"""The ledger's SQL outside the group-commit hot path (app/ledger/hot_repository.py): reads,
and the corrections and transfers that run in a request's own unit of work."""

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

CARD_ID = text("""
    SELECT id FROM cards WHERE program_id = :program_id AND card_number = :card_number
""")

# Newest first, keyset pagination on (posted_at, id): stable while new postings arrive.
CARD_HISTORY = text("""
    SELECT t.id, t.type, t.partner_id, t.reference, t.description, t.purchase_amount,
           t.occurred_at, t.posted_at,
           coalesce(sum(e.amount) FILTER (WHERE e.asset = 'points'), 0) AS points,
           coalesce(sum(e.amount) FILTER (WHERE e.asset = 'cashback'), 0) AS cashback
    FROM transactions t
    -- LEFT: a hold's capture moves value from the held account, not the card's (it shows as 0)
    LEFT JOIN (entries e JOIN accounts a ON a.id = e.account_id AND a.card_id = :card_id)
           ON e.transaction_id = t.id
    WHERE (t.card_id = :card_id OR t.counterparty_card_id = :card_id)
      AND (CAST(:partner_id AS uuid) IS NULL OR t.partner_id = CAST(:partner_id AS uuid))
      AND (CAST(:before_posted_at AS timestamptz) IS NULL
           OR (t.posted_at, t.id) < (CAST(:before_posted_at AS timestamptz),
                                     CAST(:before_id AS uuid)))
    GROUP BY t.id
    ORDER BY t.posted_at DESC, t.id DESC
    LIMIT :limit
""")

TRANSACTION = text("""
    SELECT t.id, t.type, c.card_number, t.partner_id, t.api_key_id, t.reference, t.description,
           t.purchase_amount, t.currency, t.corrects_id, t.occurred_at, t.posted_at
    FROM transactions t LEFT JOIN cards c ON c.id = t.card_id
    WHERE t.id = :id AND t.program_id = :program_id
""")

TRANSACTION_ENTRIES = text("""
    SELECT e.account_id, a.kind AS account_kind, e.asset, e.amount, c.card_number, a.partner_id
    FROM entries e
    JOIN accounts a ON a.id = e.account_id
    LEFT JOIN cards c ON c.id = a.card_id
    WHERE e.transaction_id = :id
    ORDER BY e.id
""")


async def card_id(conn: AsyncConnection, program_id: int, card_number: str) -> int | None:
    params = {"program_id": program_id, "card_number": card_number}
    row = (await conn.execute(CARD_ID, params)).first()
    return None if row is None else int(row.id)


async def card_history(
    conn: AsyncConnection,
    *,
    card_id: int,
    partner_id: uuid.UUID | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Row[tuple[object, ...]]]:
    params = {
        "card_id": card_id,
        "partner_id": partner_id,
        "before_posted_at": before[0] if before else None,
        "before_id": before[1] if before else None,
        "limit": limit,
    }
    return list(await conn.execute(CARD_HISTORY, params))


async def transaction(
    conn: AsyncConnection, program_id: int, transaction_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    params = {"id": transaction_id, "program_id": program_id}
    return (await conn.execute(TRANSACTION, params)).first()


async def transaction_entries(
    conn: AsyncConnection, transaction_id: uuid.UUID
) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(TRANSACTION_ENTRIES, {"id": transaction_id}))


OPERATOR_REFERENCE_EXISTS = text("""
    SELECT 1 FROM transactions
    WHERE program_id = :program_id AND partner_id IS NULL AND type = :type
      AND reference = :reference
""")


async def operator_reference_exists(
    conn: AsyncConnection, program_id: int, type: str, reference: str
) -> bool:
    params = {"program_id": program_id, "type": type, "reference": reference}
    return (await conn.execute(OPERATOR_REFERENCE_EXISTS, params)).first() is not None


# The transaction a reversal or refund corrects; its card's accounts locked in id order (as
# every posting locks them); and any reversal already committed (read after the lock, so one
# that committed while we waited is seen).
CORRECTION_TARGET = text("""
    SELECT t.id, t.type, t.card_id, t.partner_id, t.purchase_amount, t.currency,
           t.eligible_amount, t.occurred_at, c.card_number, c.status
    FROM transactions t JOIN cards c ON c.id = t.card_id
    WHERE t.id = :id AND t.program_id = :program_id
""")

LOCK_CARD_ACCOUNTS = text("""
    SELECT id, asset, balance, held, pending, closed_at FROM accounts
    WHERE card_id = :card_id ORDER BY id FOR NO KEY UPDATE
""")

EXISTING_REVERSAL = text("""
    SELECT id FROM transactions WHERE corrects_id = :id AND type = 'reversal'
""")

ORIGINAL_ENTRIES = text("""
    SELECT e.account_id, a.kind, e.asset, e.amount
    FROM entries e JOIN accounts a ON a.id = e.account_id
    WHERE e.transaction_id = :id ORDER BY e.id
""")


# The card that holds a card's value now: itself, or the end of its chain of replacements and
# merges. (Read before the lock; the caller checks the locked accounts and follows again if the
# card was replaced meanwhile.)
CURRENT_CARD = text("""
    WITH RECURSIVE chain AS (
        SELECT id, card_number, status, replaced_by_card_id, 0 AS depth
        FROM cards WHERE id = :card_id
        UNION ALL
        SELECT c.id, c.card_number, c.status, c.replaced_by_card_id, chain.depth + 1
        FROM cards c JOIN chain ON c.id = chain.replaced_by_card_id
        WHERE chain.depth < 100
    )
    SELECT id, card_number, status FROM chain ORDER BY depth DESC LIMIT 1
""")


async def current_card(conn: AsyncConnection, card_id: int) -> Row[tuple[object, ...]]:
    return (await conn.execute(CURRENT_CARD, {"card_id": card_id})).one()


async def correction_target(
    conn: AsyncConnection, program_id: int, transaction_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    params = {"id": transaction_id, "program_id": program_id}
    return (await conn.execute(CORRECTION_TARGET, params)).first()


async def lock_card_accounts(conn: AsyncConnection, card_id: int) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(LOCK_CARD_ACCOUNTS, {"card_id": card_id}))


async def existing_reversal(conn: AsyncConnection, transaction_id: uuid.UUID) -> uuid.UUID | None:
    row = (await conn.execute(EXISTING_REVERSAL, {"id": transaction_id})).first()
    return None if row is None else row.id


async def original_entries(
    conn: AsyncConnection, transaction_id: uuid.UUID
) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(ORIGINAL_ENTRIES, {"id": transaction_id}))


# What was already given back for a redemption: its refunds, or all of it if it was reversed.
# (The card side of each, whichever card it went to: a refund after a replacement credits the
# new card.)
RETURNED = text("""
    SELECT coalesce(sum(e.amount) FILTER (WHERE t.type = 'refund'), 0) AS refunded,
           bool_or(t.type = 'reversal') AS reversed
    FROM transactions t
    JOIN entries e ON e.transaction_id = t.id
    JOIN accounts a ON a.id = e.account_id AND a.kind = 'card'
    WHERE t.corrects_id = :id
""")


async def returned(conn: AsyncConnection, transaction_id: uuid.UUID) -> tuple[int, bool]:
    params = {"id": transaction_id}
    row = (await conn.execute(RETURNED, params)).one()
    return int(row.refunded), bool(row.reversed)


# A posting written outside the group-commit engine (transfers, reversals, refunds), its
# accounts locked by the caller: the new card balances, the transaction, its entries.
WRITE_POSTING = text("""
    WITH balances AS (
        UPDATE accounts a SET balance = v.balance
        FROM unnest(CAST(:account_ids AS bigint[]), CAST(:new_balances AS bigint[]))
             AS v(id, balance)
        WHERE a.id = v.id
    ),
    posted AS (
        INSERT INTO transactions (id, program_id, type, card_id, counterparty_card_id,
                                  partner_id, api_key_id, reference, description, corrects_id,
                                  purchase_amount, currency, occurred_at, points_price,
                                  cashback_funded)
        VALUES (:id, :program_id, :type, :card_id, :counterparty_card_id, :partner_id,
                :api_key_id, :reference, :description, :corrects_id, :purchase_amount,
                :currency, now(),
                -- A correction is valued at its original's price, whatever the price now.
                (SELECT o.points_price FROM transactions o
                 WHERE o.id = CAST(:corrects_id AS uuid)),
                (SELECT o.cashback_funded FROM transactions o
                 WHERE o.id = CAST(:corrects_id AS uuid)))
        RETURNING posted_at
    ),
    legs AS (
        INSERT INTO entries (transaction_id, account_id, asset, amount)
        SELECT :id, * FROM unnest(CAST(:leg_accounts AS bigint[]), CAST(:leg_assets AS text[]),
                                  CAST(:leg_amounts AS bigint[]))
    )
    SELECT posted_at FROM posted
""")


async def write_posting(
    conn: AsyncConnection,
    transaction: dict[str, object],
    balances: dict[int, int],
    legs: list[tuple[int, str, int]],
) -> datetime:
    params = {
        "counterparty_card_id": None,
        "partner_id": None,
        "reference": None,
        "description": None,
        "corrects_id": None,
        "purchase_amount": None,
        "currency": None,
        **transaction,
        "account_ids": list(balances),
        "new_balances": list(balances.values()),
        "leg_accounts": [leg[0] for leg in legs],
        "leg_assets": [leg[1] for leg in legs],
        "leg_amounts": [leg[2] for leg in legs],
    }
    posted_at: datetime = (await conn.execute(WRITE_POSTING, params)).one().posted_at
    return posted_at


# Goods returned against an accrual so far (read under the card's lock, like every return).
PURCHASE_RETURNS = text("""
    SELECT (SELECT coalesce(sum(amount), 0) FROM purchase_returns
            WHERE accrual_id = :accrual_id) AS returned,
           EXISTS (SELECT 1 FROM purchase_returns
                   WHERE partner_id = :partner_id AND reference = :reference) AS reference_taken
""")

INSERT_PURCHASE_RETURN = text("""
    INSERT INTO purchase_returns (id, accrual_id, partner_id, amount, transaction_id,
                                  api_key_id, reference)
    VALUES (:id, :accrual_id, :partner_id, :amount, :transaction_id, :api_key_id, :reference)
    RETURNING created_at
""")


async def purchase_returns(
    conn: AsyncConnection,
    accrual_id: uuid.UUID,
    partner_id: uuid.UUID | None,
    reference: str | None,
) -> tuple[int, bool]:
    """What was returned of the purchase so far, and whether the partner already used
    `reference` for a return."""
    params = {"accrual_id": accrual_id, "partner_id": partner_id, "reference": reference}
    row = (await conn.execute(PURCHASE_RETURNS, params)).one()
    return int(row.returned), bool(row.reference_taken)


async def insert_purchase_return(conn: AsyncConnection, **values: object) -> datetime:
    created_at: datetime = (await conn.execute(INSERT_PURCHASE_RETURN, values)).one().created_at
    return created_at
