"""The holds' SQL, on raw asyncpg like the hot path: the group-commit engine releases lapsed
holds inside its own transaction (app/ledger/engine.py), where only the driver connection
exists. The request-scoped callers pass the driver connection beneath their SQLAlchemy one,
which runs in the same database transaction.

Every statement here that reads or changes a hold runs with the card's accounts locked: that
lock, not the hold row, is what orders holds, postings, replacements and the sweep."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

HOLD_COLUMNS = """
    h.id, h.card_id, c.card_number, h.account_id, h.partner_id, h.api_key_id, h.asset,
    h.amount, h.reference, h.status, h.captured_amount, h.expires_at, h.created_at,
    h.settled_at, h.settled_by, h.expires_at <= now() AS lapsed
"""

GET = f"""
    SELECT {HOLD_COLUMNS} FROM holds h JOIN cards c ON c.id = h.card_id
    WHERE h.id = $1 AND h.program_id = $2
"""

# The open holds on some cards (whose accounts the caller locked), with whether each ran out.
OPEN_ON_CARDS = f"""
    SELECT {HOLD_COLUMNS} FROM holds h JOIN cards c ON c.id = h.card_id
    WHERE h.card_id = ANY($1::bigint[]) AND h.status = 'open'
    ORDER BY h.expires_at, h.id
"""

# Cards with open holds that ran out, for the sweep, a page at a time.
LAPSED_CARDS = """
    SELECT DISTINCT card_id FROM (
        SELECT card_id FROM holds
        WHERE status = 'open' AND expires_at <= now() AND program_id = $1
        ORDER BY expires_at LIMIT $2
    ) page
"""

# The cards' accounts, locked in id order (the order every posting locks them in).
LOCK_CARDS = """
    SELECT a.id, a.card_id, a.asset, a.balance, a.held, a.pending, a.closed_at FROM accounts a
    WHERE a.card_id = ANY($1::bigint[])
    ORDER BY a.id FOR NO KEY UPDATE
"""

# Everything a change to holds writes, in one statement: the card accounts' balance and held
# amounts (as deltas: the caller holds their locks), the transactions and their entries, the
# holds settled (only from open: `settled` counts them) and the holds created.
WRITE = """
    WITH moved AS (
        UPDATE accounts a SET balance = a.balance + v.balance, held = a.held + v.held
        FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS v(id, balance, held)
        WHERE a.id = v.id
    ),
    posted AS (
        INSERT INTO transactions (id, program_id, type, card_id, partner_id, api_key_id,
                                  reference, description, corrects_id, occurred_at,
                                  points_price)
        SELECT t.id, $1, t.type, t.card_id, t.partner_id, t.api_key_id, t.reference,
               t.description, t.corrects_id, now(),
               -- A capture of points at a partner: the reimbursement in force now.
               CASE WHEN t.type = 'capture' AND t.partner_id IS NOT NULL
                         AND (SELECT h.asset FROM holds h WHERE h.id = t.corrects_id) = 'points'
               THEN (SELECT pr.reimbursement_per_1000 FROM partner_prices pr
                     WHERE pr.partner_id = t.partner_id AND pr.effective_from <= now()
                     ORDER BY pr.effective_from DESC LIMIT 1) END
        FROM unnest($5::uuid[], $6::text[], $7::bigint[], $8::uuid[], $9::uuid[], $10::text[],
                    $11::text[], $12::uuid[])
             AS t(id, type, card_id, partner_id, api_key_id, reference, description, corrects_id)
    ),
    legs AS (
        INSERT INTO entries (transaction_id, account_id, asset, amount)
        SELECT * FROM unnest($13::uuid[], $14::bigint[], $15::text[], $16::bigint[])
    ),
    settled AS (
        UPDATE holds h SET status = v.status, captured_amount = v.captured,
                           settled_at = now(), settled_by = v.settled_by
        FROM unnest($17::uuid[], $18::text[], $19::bigint[], $20::uuid[])
             AS v(id, status, captured, settled_by)
        WHERE h.id = v.id AND h.status = 'open'
        RETURNING h.id
    ),
    created AS (
        INSERT INTO holds (id, program_id, card_id, account_id, partner_id, api_key_id, asset,
                           amount, reference, status, expires_at)
        SELECT v.id, $1, v.card_id, v.account_id, v.partner_id, v.api_key_id, v.asset,
               v.amount, v.reference, 'open', now() + v.ttl * interval '1 second'
        FROM unnest($21::uuid[], $22::bigint[], $23::bigint[], $24::uuid[], $25::uuid[],
                    $26::text[], $27::bigint[], $28::text[], $29::int[])
             AS v(id, card_id, account_id, partner_id, api_key_id, asset, amount, reference,
                  ttl)
    )
    SELECT (SELECT count(*) FROM settled) AS settled, now() AS posted_at
"""

# A replaced or merged card's open holds follow its value to the card that takes it over.
MOVE_OPEN = """
    WITH moved AS (
        UPDATE holds h SET card_id = $2, account_id = n.id
        FROM accounts o, accounts n
        WHERE h.card_id = $1 AND h.status = 'open'
          AND o.id = h.account_id AND n.card_id = $2 AND n.asset = o.asset
        RETURNING h.account_id, h.amount
    ),
    per_account AS (SELECT account_id, sum(amount) AS amount FROM moved GROUP BY account_id),
    gained AS (
        UPDATE accounts a SET held = a.held + p.amount FROM per_account p WHERE a.id = p.account_id
    )
    UPDATE accounts SET held = 0 WHERE card_id = $1 AND held <> 0
"""


@dataclass
class Writes:
    """What a change to holds will write, collected before one `write`."""

    deltas: dict[int, list[int]] = field(default_factory=dict)
    """card account id -> [balance change, held change]"""
    transactions: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[uuid.UUID, int, str, int]] = field(default_factory=list)
    settled: list[tuple[uuid.UUID, str, int | None, uuid.UUID]] = field(default_factory=list)
    created: list[tuple[Any, ...]] = field(default_factory=list)

    def move(self, account_id: int, balance: int, held: int) -> None:
        delta = self.deltas.setdefault(account_id, [0, 0])
        delta[0] += balance
        delta[1] += held


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def write(conn: asyncpg.Connection, program_id: int, writes: Writes) -> datetime:
    row = await conn.fetchrow(
        WRITE,
        program_id,
        list(writes.deltas),
        [d[0] for d in writes.deltas.values()],
        [d[1] for d in writes.deltas.values()],
        *_columns(writes.transactions, 8),
        *_columns(writes.entries, 4),
        *_columns(writes.settled, 4),
        *_columns(writes.created, 9),
    )
    assert row is not None
    if row["settled"] != len(writes.settled):
        # Holds change only under their card's lock, which the caller holds: a hold settled
        # meanwhile would be a bug, and the database transaction must not commit.
        raise RuntimeError("a hold settled concurrently despite the card lock")
    posted_at: datetime = row["posted_at"]
    return posted_at


async def get(conn: asyncpg.Connection, program_id: int, hold_id: uuid.UUID) -> asyncpg.Record:
    return await conn.fetchrow(GET, hold_id, program_id)


async def open_on_cards(conn: asyncpg.Connection, card_ids: list[int]) -> list[asyncpg.Record]:
    return list(await conn.fetch(OPEN_ON_CARDS, card_ids))


async def lapsed_cards(conn: asyncpg.Connection, program_id: int, limit: int) -> list[int]:
    return [r["card_id"] for r in await conn.fetch(LAPSED_CARDS, program_id, limit)]


async def lock_cards(conn: asyncpg.Connection, card_ids: list[int]) -> list[asyncpg.Record]:
    return list(await conn.fetch(LOCK_CARDS, card_ids))


async def move_open(conn: asyncpg.Connection, from_card_id: int, to_card_id: int) -> None:
    await conn.execute(MOVE_OPEN, from_card_id, to_card_id)


CARD = """
    SELECT id, card_number, status FROM cards WHERE program_id = $1 AND card_number = $2
"""

# Where a capture's value goes: the partner's redeemed account for the asset (NULL partner:
# the operator's own rewards, whose account the program context knows).
PARTNER = """
    SELECT p.id, p.can_redeem, a.id AS redeemed_account FROM partners p
    JOIN accounts a ON a.partner_id = p.id AND a.kind = 'partner_redeemed' AND a.asset = $3
    WHERE p.program_id = $1 AND p.id = $2
"""

REFERENCE_TAKEN = """
    SELECT 1 FROM transactions
    WHERE partner_id IS NOT DISTINCT FROM $2 AND type = 'hold' AND reference = $3
      AND program_id = $1
"""


async def card(conn: asyncpg.Connection, program_id: int, card_number: str) -> asyncpg.Record:
    return await conn.fetchrow(CARD, program_id, card_number)


async def partner(
    conn: asyncpg.Connection, program_id: int, partner_id: uuid.UUID, asset: str
) -> asyncpg.Record:
    return await conn.fetchrow(PARTNER, program_id, partner_id, asset)


async def reference_taken(
    conn: asyncpg.Connection, program_id: int, partner_id: uuid.UUID | None, reference: str
) -> bool:
    return await conn.fetchrow(REFERENCE_TAKEN, program_id, partner_id, reference) is not None
