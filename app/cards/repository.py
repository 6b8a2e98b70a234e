import uuid
from datetime import date

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

INSERT_CARD = text("""
    INSERT INTO cards (program_id, card_number, kind, customer_reference, birth_date, status,
                       issued_by_partner_id, referred_by_card_id, referral_open)
    VALUES (:program_id, :card_number, :kind, :customer_reference, :birth_date, 'active',
            :partner_id, :referred_by, CAST(:referred_by AS bigint) IS NOT NULL)
    ON CONFLICT (program_id, card_number) DO NOTHING
    RETURNING id
""")

INSERT_CARD_ACCOUNTS = text("""
    INSERT INTO accounts (program_id, kind, asset, card_id, balance, held, pending)
    SELECT :program_id, 'card', asset, :card_id, 0, 0, 0
    FROM unnest(CAST(:assets AS text[])) AS a(asset)
""")

# A card with the balances of its accounts, in one row.
GET_CARD = text("""
    SELECT c.id, c.card_number, c.kind, c.status, c.customer_reference, c.birth_date,
           c.created_at,
           c.closed_at,
           (SELECT r.card_number FROM cards r WHERE r.id = c.replaced_by_card_id) AS replaced_by,
           (SELECT r.card_number FROM cards r WHERE r.id = c.referred_by_card_id) AS referred_by,
           max(a.balance) FILTER (WHERE a.asset = 'points') AS points,
           max(a.balance) FILTER (WHERE a.asset = 'cashback') AS cashback
    FROM cards c JOIN accounts a ON a.card_id = c.id
    WHERE c.program_id = :program_id AND c.card_number = :card_number
    GROUP BY c.id
""")

# Blocking and unblocking never touch a closed card.
SET_STATUS = text("""
    UPDATE cards SET status = :status, updated_at = now()
    WHERE program_id = :program_id AND card_number = :card_number AND status <> 'closed'
    RETURNING id
""")


async def insert(
    conn: AsyncConnection,
    *,
    program_id: int,
    card_number: str,
    kind: str,
    customer_reference: str | None,
    birth_date: date | None = None,
    partner_id: uuid.UUID | None,
    referred_by: int | None = None,
) -> int | None:
    params = {
        "referred_by": referred_by,
        "program_id": program_id,
        "card_number": card_number,
        "kind": kind,
        "customer_reference": customer_reference,
        "birth_date": birth_date,
        "partner_id": partner_id,
    }
    row = (await conn.execute(INSERT_CARD, params)).first()
    return None if row is None else int(row.id)


async def insert_accounts(
    conn: AsyncConnection, program_id: int, card_id: int, assets: list[str]
) -> None:
    params = {"program_id": program_id, "card_id": card_id, "assets": assets}
    await conn.execute(INSERT_CARD_ACCOUNTS, params)


async def get(
    conn: AsyncConnection, program_id: int, card_number: str
) -> Row[tuple[object, ...]] | None:
    params = {"program_id": program_id, "card_number": card_number}
    return (await conn.execute(GET_CARD, params)).first()


async def set_status(conn: AsyncConnection, program_id: int, card_number: str, status: str) -> bool:
    params = {"program_id": program_id, "card_number": card_number, "status": status}
    return (await conn.execute(SET_STATUS, params)).first() is not None


# The card's accounts, locked in id order (the order every posting locks them in), with the
# card's own row: what closing, replacing, merging and transfers start from. After waiting for
# the lock, only the locked account rows are re-read: `a.closed_at` is current, the card row's
# status may be older.
LOCK_CARDS = text("""
    SELECT c.id AS card_id, c.card_number, c.status, c.kind, c.customer_reference, c.birth_date,
           a.id AS account_id, a.asset, a.balance, a.held, a.pending, a.closed_at
    FROM cards c JOIN accounts a ON a.card_id = c.id
    WHERE c.program_id = :program_id AND c.card_number = ANY(CAST(:numbers AS text[]))
    ORDER BY a.id
    FOR NO KEY UPDATE OF a
""")

CLOSE_CARD = text("""
    WITH card AS (
        UPDATE cards SET status = 'closed', closed_at = now(), updated_at = now(),
                         replaced_by_card_id = :replaced_by
        WHERE id = :card_id
        RETURNING id
    )
    UPDATE accounts SET closed_at = now() WHERE card_id = (SELECT id FROM card)
""")


async def lock_cards(
    conn: AsyncConnection, program_id: int, numbers: list[str]
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "numbers": numbers}
    return list(await conn.execute(LOCK_CARDS, params))


async def close(conn: AsyncConnection, card_id: int, replaced_by: int | None) -> None:
    await conn.execute(CLOSE_CARD, {"card_id": card_id, "replaced_by": replaced_by})
