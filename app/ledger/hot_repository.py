"""The hot path's SQL on raw asyncpg (`$n` parameters, arrays in, rows out): set-based posting
(app/ledger/engine.py: a fixed number of statements for a group of any size) and the balance
read. Here SQLAlchemy's per-statement overhead would cost more than the SQL itself."""

import uuid
from datetime import date, datetime
from typing import Any

import asyncpg

# Resolves every API key of a group and claims every Idempotency-Key, in one statement.
# A key held by a transaction still in flight makes the claim wait for it; a committed one is
# skipped (not in claimed_keys) and its stored answer fetched by ANSWERS.
AUTH_AND_CLAIM = """
    WITH keys AS (
        SELECT key_hash, id, role, partner_id FROM api_keys
        WHERE key_hash = ANY($1::bytea[]) AND revoked_at IS NULL AND program_id = $2
    ),
    claimed AS (
        INSERT INTO idempotency_keys (api_key_id, key, request_hash)
        SELECT k.id, w.key, w.request_hash
        FROM unnest($3::bytea[], $4::text[], $5::bytea[]) AS w(key_hash, key, request_hash)
        JOIN keys k ON k.key_hash = w.key_hash
        ON CONFLICT (api_key_id, key) DO NOTHING
        RETURNING api_key_id, key
    )
    SELECT k.key_hash, k.id, k.role, k.partner_id,
           ARRAY(SELECT c.key FROM claimed c WHERE c.api_key_id = k.id) AS claimed_keys
    FROM keys k
"""

ANSWERS = """
    SELECT i.api_key_id, i.key, i.request_hash, i.response_status, i.response_body
    FROM idempotency_keys i
    JOIN unnest($1::uuid[], $2::text[]) AS k(api_key_id, key)
      ON i.api_key_id = k.api_key_id AND i.key = k.key
"""

# Everything the rules need for each posting, one row per request, and the only locks a
# posting takes: the accounts of the cards involved, in id order (so two groups never wait on
# each other in a cycle). System accounts are never locked. A referred card's postings lock its
# referrer's accounts too, until its first purchase (`referral_open`): a referral campaign
# credits the referrer then (app/ledger/earning.py). FOR NO KEY UPDATE returns the
# newest committed balances after any wait; `locked_count` makes sure every lock is taken.
# `card_has_holds` (from the locked rows, so current) says whether the card's holds need a look:
# lapsed ones are released before the card's postings are checked (app/holds/expiry.py).
# `card_pending_matured` likewise: points whose return window passed are released first
# (app/pending/service.py). And `card_expiry_due`: a card with a lot whose day came (in the
# program's time zone, $8) has its due points expired next (app/expiry/service.py). Lots and
# pending points only change under the card's lock, which this statement holds by then.
CONTEXT_AND_LOCK = """
    WITH wanted AS (
        SELECT c.id FROM cards c WHERE c.program_id = $7 AND c.card_number = ANY($2::text[])
        UNION
        SELECT c.referred_by_card_id FROM cards c
        WHERE c.program_id = $7 AND c.card_number = ANY($2::text[]) AND c.referral_open
    ),
    locked AS (
        SELECT a.id, a.balance, a.held, a.pending, a.closed_at FROM accounts a
        WHERE a.card_id IN (SELECT id FROM wanted)
        ORDER BY a.id
        FOR NO KEY UPDATE
    )
    SELECT r.idx,
           c.id AS card_id, c.status AS card_status,
           cp.id AS card_points_account, cc.id AS card_cashback_account,
           lp.balance AS card_points, lc.balance AS card_cashback,
           (lp.closed_at IS NOT NULL OR lc.closed_at IS NOT NULL) AS card_closed_now,
           (lp.held > 0 OR lc.held > 0) AS card_has_holds,
           (lp.pending > 0 AND EXISTS (
               SELECT 1 FROM pending_points w
               WHERE w.card_id = c.id AND w.released_by IS NULL AND w.remaining > 0
                 AND w.spendable_at <= now())) AS card_pending_matured,
           EXISTS (SELECT 1 FROM point_lots l
                   WHERE l.card_id = c.id AND l.expires_on <= timezone($8, now())::date)
           AS card_expiry_due,
           p.id AS partner_id, p.earn_points, p.earn_per_amount, p.cashback_bps,
           p.earn_rule_version, p.excluded_categories, p.excluded_skus,
           p.can_earn, p.can_redeem, p.return_window_days,
           price.issue_per_1000, price.reimbursement_per_1000, price.funds_cashback,
           rc.id AS referrer_card_id, rc.card_number AS referrer_card_number,
           rp.id AS referrer_points_account, lr.balance AS referrer_points,
           (rc.status = 'active' AND lr.closed_at IS NULL) AS referrer_open,
           (SELECT max(version) FROM tier_ladders WHERE program_id = $7) AS ladder_version,
           CASE WHEN r.idx = 0 THEN (  -- the active campaigns, once per group
               SELECT json_agg(json_build_object(
                   'id', k.id, 'code', k.code, 'version', k.version, 'kind', k.kind,
                   'points_pct', k.points_pct, 'bonus_points', k.bonus_points,
                   'quiet_days', k.quiet_days, 'stamps_needed', k.stamps_needed,
                   'min_amount', k.min_amount, 'window_days', k.window_days,
                   'partner_id', k.partner_id, 'categories', k.categories, 'tiers', k.tiers,
                   'funded_by', k.funded_by, 'budget_points', k.budget_points,
                   'referrer_points', k.referrer_points))::text
               FROM campaigns k
               WHERE k.program_id = $7 AND k.starts_at <= now() AND k.ends_at > now()
           ) END AS campaigns,
           pp.id AS counter_points_account, pc.id AS counter_cashback_account,
           coalesce(dp.id, dop.id) AS duplicate_id,
           (SELECT count(*) FROM locked) AS locked_count,
           now() AS now
    FROM unnest($1::int[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                $9::timestamptz[])
         AS r(idx, card_number, partner_id, counter_kind, type, reference, occurred_at)
    LEFT JOIN cards c ON c.program_id = $7 AND c.card_number = r.card_number
    LEFT JOIN accounts cp ON cp.card_id = c.id AND cp.asset = 'points'
    LEFT JOIN accounts cc ON cc.card_id = c.id AND cc.asset = 'cashback'
    LEFT JOIN locked lp ON lp.id = cp.id
    LEFT JOIN locked lc ON lc.id = cc.id
    LEFT JOIN cards rc ON rc.id = c.referred_by_card_id AND c.referral_open
    LEFT JOIN accounts rp ON rp.card_id = rc.id AND rp.asset = 'points'
    LEFT JOIN locked lr ON lr.id = rp.id
    LEFT JOIN partners p ON p.program_id = $7 AND p.id = r.partner_id
    LEFT JOIN LATERAL (
        -- The partner's prices in force when the posting happened (an offline till's
        -- purchase of yesterday is valued at yesterday's price).
        SELECT pr.issue_per_1000, pr.reimbursement_per_1000, pr.funds_cashback
        FROM partner_prices pr
        WHERE pr.partner_id = p.id AND pr.effective_from <= coalesce(r.occurred_at, now())
        ORDER BY pr.effective_from DESC LIMIT 1
    ) price ON true
    LEFT JOIN accounts pp
           ON pp.partner_id = p.id AND pp.kind = r.counter_kind AND pp.asset = 'points'
    LEFT JOIN accounts pc
           ON pc.partner_id = p.id AND pc.kind = r.counter_kind AND pc.asset = 'cashback'
    LEFT JOIN LATERAL (
        SELECT t.id FROM transactions t
        WHERE t.partner_id = r.partner_id AND t.type = r.type AND t.reference = r.reference
        LIMIT 1  -- keeps it a per-row index probe, never a hash of all transactions
    ) dp ON true
    LEFT JOIN LATERAL (
        SELECT t.id FROM transactions t
        WHERE r.partner_id IS NULL AND t.program_id = $7 AND t.partner_id IS NULL
          AND t.type = r.type AND t.reference = r.reference
        LIMIT 1
    ) dop ON true
"""

# One statement writes the whole group: new card balances (computed under the locks above),
# the transactions, their entries, and the stored answers of their Idempotency-Keys.
WRITE = """
    WITH balances AS (
        UPDATE accounts a SET balance = v.balance, pending = a.pending + v.pending
        FROM unnest($1::bigint[], $2::bigint[], $43::bigint[]) AS v(id, balance, pending)
        WHERE a.id = v.id
    ),
    posted AS (
        INSERT INTO transactions
            (id, program_id, type, card_id, partner_id, api_key_id, reference,
             purchase_amount, currency, description, occurred_at, eligible_amount, points_price,
             cashback_funded)
        SELECT t.id, $3, t.type, t.card_id, t.partner_id, t.api_key_id, t.reference,
               t.purchase_amount, t.currency, t.description, t.occurred_at, t.eligible_amount,
               t.points_price, t.cashback_funded
        FROM unnest($4::uuid[], $5::text[], $6::bigint[], $7::uuid[], $8::uuid[], $9::text[],
                    $10::bigint[], $11::text[], $12::text[], $13::timestamptz[], $22::bigint[],
                    $51::bigint[], $52::bool[])
             AS t(id, type, card_id, partner_id, api_key_id, reference, purchase_amount,
                  currency, description, occurred_at, eligible_amount, points_price,
                  cashback_funded)
    ),
    legs AS (
        INSERT INTO entries (transaction_id, account_id, asset, amount)
        SELECT * FROM unnest($14::uuid[], $15::bigint[], $16::text[], $17::bigint[])
    ),
    answers AS (
        UPDATE idempotency_keys i SET response_status = v.status, response_body = v.body
        FROM unnest($18::uuid[], $19::text[], $20::int[], $21::bytea[])
             AS v(api_key_id, key, status, body)
        WHERE i.api_key_id = v.api_key_id AND i.key = v.key
    ),
    earned AS (
        INSERT INTO earnings (transaction_id, rule, rule_ref, rule_version, points, cashback)
        SELECT * FROM unnest($23::uuid[], $24::text[], $25::text[], $26::int[], $27::bigint[],
                             $28::bigint[])
    ),
    spend AS (
        INSERT INTO card_spend (card_id, month, amount)
        SELECT * FROM unnest($29::bigint[], $30::date[], $31::bigint[])
        ON CONFLICT (card_id, month) DO UPDATE SET amount = card_spend.amount + EXCLUDED.amount
    ),
    moved AS (
        -- Tier moves, and referred cards' first purchases (no referrer lock any more).
        UPDATE cards c SET tier = coalesce(v.tier, c.tier),
                           tier_since = CASE WHEN v.tier IS NULL THEN c.tier_since ELSE now() END,
                           referral_open = c.referral_open AND NOT v.first_purchase
        FROM unnest($32::bigint[], $33::text[], $49::bool[]) AS v(id, tier, first_purchase)
        WHERE c.id = v.id
    ),
    granted AS (
        -- Waits for an end being committed; a campaign ended meanwhile is not updated, and
        -- the caller reruns the group (the count below).
        UPDATE campaigns k SET spent_points = k.spent_points + v.points
        FROM unnest($34::uuid[], $35::bigint[]) AS v(id, points)
        WHERE k.id = v.id AND k.ends_at > now()
        RETURNING k.id
    ),
    stamped AS (
        INSERT INTO card_stamps (campaign_id, card_id, stamps)
        SELECT * FROM unnest($36::uuid[], $37::bigint[], $38::int[])
        ON CONFLICT (campaign_id, card_id) DO UPDATE SET stamps = EXCLUDED.stamps
    ),
    lots AS (
        -- What cards earned, per day: the lots expiry counts down ($42: the program's
        -- expiry in months, 0 for never), from the day the points became spendable
        -- (`starts_on`: later than the day earned for points that waited out a return window).
        INSERT INTO point_lots (card_id, expires_on, earned_on, amount)
        SELECT v.card_id,
               CASE WHEN $42::int > 0 THEN (v.starts_on + make_interval(months => $42))::date
                    ELSE 'infinity'::date END,
               v.earned_on, sum(v.amount)
        FROM unnest($39::bigint[], $40::date[], $41::bigint[], $50::date[])
             AS v(card_id, earned_on, amount, starts_on)
        GROUP BY 1, 2, 3
        ON CONFLICT (card_id, expires_on, earned_on)
        DO UPDATE SET amount = point_lots.amount + EXCLUDED.amount
    ),
    waiting AS (
        -- Points that wait out a partner's return window (app/pending/service.py).
        INSERT INTO pending_points
            (id, program_id, card_id, account_id, amount, remaining, spendable_at)
        SELECT v.id, $3, v.card_id, v.account_id, v.amount, v.amount, v.spendable_at
        FROM unnest($44::uuid[], $45::bigint[], $46::bigint[], $47::bigint[],
                    $48::timestamptz[]) AS v(id, card_id, account_id, amount, spendable_at)
    )
    SELECT (SELECT count(*) FROM granted) AS granted
"""

# The tier ladder (if any) and, per card, its tier, its qualifying spend over the ladder's
# window, its latest purchase, and for birthday campaigns ($3: their codes) the birth date and
# when the card last got a birthday bonus. Read after the cards' accounts are locked (a
# statement of its own, so a fresh snapshot): whatever changes these holds those locks.
CARD_STANDING = """
    WITH ladder AS (
        SELECT version, window_months, tiers::text AS tiers FROM tier_ladders
        WHERE program_id = $1 ORDER BY version DESC LIMIT 1
    )
    SELECT ladder.version, ladder.window_months, ladder.tiers, c.id AS card_id, c.tier,
           (SELECT coalesce(sum(s.amount), 0) FROM card_spend s
            WHERE s.card_id = c.id
              AND s.month >= (date_trunc('month', now())
                              - make_interval(months => coalesce(ladder.window_months, 12) - 1)
                             )::date)
           AS spend,
           (SELECT max(t.occurred_at) FROM transactions t
            WHERE t.card_id = c.id AND t.type = 'accrual' AND t.purchase_amount > 0)
           AS last_purchase_at,
           c.birth_date,
           CASE WHEN c.birth_date IS NOT NULL THEN (
               SELECT max(t.occurred_at) FROM transactions t
               JOIN earnings e ON e.transaction_id = t.id
               WHERE t.card_id = c.id AND e.rule = 'campaign'
                 AND e.rule_ref = ANY($3::text[])
           ) END AS last_birthday_bonus
    FROM cards c LEFT JOIN ladder ON true WHERE c.id = ANY($2::bigint[])
"""

# Budgeted campaigns, locked after the cards: what they granted so far is current, and so is
# whether they still run (an end committed since the context statement's snapshot is seen).
LOCK_CAMPAIGNS = """
    SELECT id, spent_points, ends_at > now() AS running FROM campaigns
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
"""


STAMPS = """
    SELECT campaign_id, card_id, stamps FROM card_stamps
    WHERE campaign_id = ANY($1::uuid[]) AND card_id = ANY($2::bigint[])
"""


async def stamps(
    conn: asyncpg.Connection, campaign_ids: list[uuid.UUID], card_ids: list[int]
) -> dict[tuple[uuid.UUID, int], int]:
    rows = await conn.fetch(STAMPS, campaign_ids, card_ids)
    return {(r["campaign_id"], r["card_id"]): r["stamps"] for r in rows}


async def lock_campaigns(
    conn: asyncpg.Connection, campaign_ids: list[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """The still-running ones, with the points they granted so far."""
    rows = await conn.fetch(LOCK_CAMPAIGNS, campaign_ids)
    return {r["id"]: r["spent_points"] for r in rows if r["running"]}


async def card_standing(
    conn: asyncpg.Connection, program_id: int, card_ids: list[int], birthday_campaigns: list[str]
) -> list[asyncpg.Record]:
    return list(await conn.fetch(CARD_STANDING, program_id, card_ids, birthday_campaigns))


# A till's balance check in one statement: the key, the card, its balances and holds. Holds
# whose time ran out are added back to what is available even before anything released them.
BALANCE_FOR_KEY = """
    SELECT c.card_number, c.status, a.points, a.points_held, a.cashback, a.cashback_held,
           a.points_pending,
           CASE WHEN a.points_pending > 0 THEN (
               SELECT coalesce(sum(w.remaining), 0) FROM pending_points w
               WHERE w.card_id = c.id AND w.released_by IS NULL AND w.remaining > 0
                 AND w.spendable_at <= now()
           ) END AS matured,
           CASE WHEN a.points_held > 0 OR a.cashback_held > 0 THEN (
               SELECT ARRAY[coalesce(sum(h.amount) FILTER (WHERE h.asset = 'points'), 0),
                            coalesce(sum(h.amount) FILTER (WHERE h.asset = 'cashback'), 0)]
               FROM holds h
               WHERE h.card_id = c.id AND h.status = 'open' AND h.expires_at <= now()
           ) END AS lapsed,
           timezone($4, now())::date AS today, lots.*
    FROM api_keys k
    LEFT JOIN cards c ON c.program_id = $2 AND c.card_number = $3
    LEFT JOIN LATERAL (
        SELECT max(balance) FILTER (WHERE asset = 'points') AS points,
               max(held) FILTER (WHERE asset = 'points') AS points_held,
               max(pending) FILTER (WHERE asset = 'points') AS points_pending,
               max(balance) FILTER (WHERE asset = 'cashback') AS cashback,
               max(held) FILTER (WHERE asset = 'cashback') AS cashback_held
        FROM accounts WHERE card_id = c.id
    ) a ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(l.earned_on ORDER BY l.expires_on, l.earned_on) AS earned,
               array_agg(CASE WHEN l.expires_on <> 'infinity' THEN l.expires_on END
                         ORDER BY l.expires_on, l.earned_on) AS expires,
               array_agg(l.amount ORDER BY l.expires_on, l.earned_on) AS amounts
        FROM point_lots l WHERE l.card_id = c.id
    ) lots ON true
    WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND k.program_id = $2
"""
# (One aggregate over the card's accounts: a single probe of the (card_id, asset) index. The
# lapsed holds are looked up only for a card with something on hold, and pending points past
# their return window (spendable already) only for a card with points pending. The card's lots, with
# today in the program's time zone ($4), say what has expired and what expires next.)


async def balance_for_key(
    conn: asyncpg.Connection, key_hash: bytes, program_id: int, card_number: str, timezone: str
) -> asyncpg.Record | None:
    """None: the key is unknown or revoked. A row without card_number: no such card."""
    return await conn.fetchrow(BALANCE_FOR_KEY, key_hash, program_id, card_number, timezone)


async def auth_and_claim(
    conn: asyncpg.Connection,
    key_hashes: list[bytes],
    program_id: int,
    wanted: list[tuple[bytes, str, bytes]],
) -> dict[bytes, asyncpg.Record]:
    """wanted: (key_hash, idempotency key, request fingerprint). Returns the active keys by
    hash, each with the idempotency keys this statement claimed for it."""
    columns = [list(c) for c in zip(*wanted, strict=True)] if wanted else [[], [], []]
    rows = await conn.fetch(AUTH_AND_CLAIM, key_hashes, program_id, *columns)
    return {r["key_hash"]: r for r in rows}


async def answers(
    conn: asyncpg.Connection, keys: list[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], asyncpg.Record]:
    rows = await conn.fetch(ANSWERS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["api_key_id"], r["key"]): r for r in rows}


# The replacement cards of closed cards, to name them in the refusal (rare: only postings to a
# closed card). A statement of its own, so a new snapshot: it also sees a replacement committed
# while the posting waited for the card's lock, which the context statement's snapshot predates.
SUCCESSORS = """
    SELECT c.id, r.card_number FROM cards c JOIN cards r ON r.id = c.replaced_by_card_id
    WHERE c.id = ANY($1::bigint[])
"""


async def successors(conn: asyncpg.Connection, card_ids: list[int]) -> dict[int, str]:
    return {r["id"]: r["card_number"] for r in await conn.fetch(SUCCESSORS, card_ids)}


async def context_and_lock(
    conn: asyncpg.Connection, program_id: int, timezone: str, rows: list[tuple[Any, ...]]
) -> tuple[dict[int, dict[str, Any]], dict[int, int], datetime]:
    """rows: (idx, card_number, partner_id, counter_kind, type, reference, occurred_at).
    Returns the
    context by idx, the locked card balances by account id, and the transaction's time."""
    columns = list(zip(*rows, strict=True))
    result = await conn.fetch(CONTEXT_AND_LOCK, *columns[:6], program_id, timezone, columns[6])
    context = {r["idx"]: dict(r) for r in result}
    balances: dict[int, int] = {}
    for r in result:
        if r["card_points_account"] is not None:
            balances[r["card_points_account"]] = r["card_points"]
            balances[r["card_cashback_account"]] = r["card_cashback"]
        if r["referrer_points"] is not None:
            balances[r["referrer_points_account"]] = r["referrer_points"]
    return context, balances, result[0]["now"]


async def write(
    conn: asyncpg.Connection,
    program_id: int,
    balances: dict[int, int],
    transactions: list[tuple[Any, ...]],
    entries: list[tuple[uuid.UUID, int, str, int]],
    stored_answers: list[tuple[uuid.UUID, str, int, bytes]],
    earnings: list[tuple[Any, ...]],
    spend: list[tuple[int, date, int]],
    cards: list[tuple[int, str | None, bool]],
    grants: list[tuple[uuid.UUID, int]],
    stamps: list[tuple[uuid.UUID, int, int]],
    lots: list[tuple[int, date, int, date]],
    expiry_months: int,
    pending: dict[int, int],
    waiting: list[tuple[uuid.UUID, int, int, int, datetime]],
) -> int:
    """Returns how many of the campaigns in `grants` were still running. `cards`: (card id, new
    tier or None, whether a referred card made its first purchase). `balances`: card
    account id -> new balance; `pending`: card account id -> change of its pending points
    (every such account is in `balances` too)."""

    def cols(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
        return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]

    granted: int = await conn.fetchval(
        WRITE,
        list(balances),
        list(balances.values()),
        program_id,
        *cols([t[:10] for t in transactions], 10),
        *cols(entries, 4),
        *cols(stored_answers, 4),
        [t[10] for t in transactions],
        *cols(earnings, 6),
        *cols(spend, 3),
        *cols([c[:2] for c in cards], 2),
        *cols(grants, 2),
        *cols(stamps, 3),
        *cols([lot[:3] for lot in lots], 3),
        expiry_months,
        [pending.get(account, 0) for account in balances],
        *cols(waiting, 5),
        [c[2] for c in cards],
        [lot[3] for lot in lots],
        [t[11] for t in transactions],
        [t[12] for t in transactions],
    )
    return granted
