"""The SQL of the rules: versions of partners' earn rules and of the tier ladder (both
append-only), and what the tier review reads and moves."""

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

# A new version of a partner's earn rule: the partner row (locked by the UPDATE, so two
# changes at once get consecutive versions) carries the current one for the posting engine.
NEW_EARN_RULE = text("""
    WITH current AS (
        UPDATE partners
        SET earn_points = :earn_points, earn_per_amount = :earn_per_amount,
            cashback_bps = :cashback_bps, excluded_categories = :excluded_categories,
            excluded_skus = :excluded_skus, return_window_days = :return_window_days,
            earn_rule_version = earn_rule_version + 1
        WHERE id = :partner_id AND program_id = :program_id
        RETURNING id, earn_rule_version
    )
    INSERT INTO earn_rules (partner_id, version, earn_points, earn_per_amount, cashback_bps,
                            excluded_categories, excluded_skus, return_window_days, api_key_id)
    SELECT id, earn_rule_version, :earn_points, :earn_per_amount, :cashback_bps,
           :excluded_categories, :excluded_skus, :return_window_days, :api_key_id
    FROM current
    RETURNING version
""")

FIRST_EARN_RULE = text("""
    INSERT INTO earn_rules (partner_id, version, earn_points, earn_per_amount, cashback_bps,
                            excluded_categories, excluded_skus, return_window_days, api_key_id)
    SELECT id, 1, earn_points, earn_per_amount, cashback_bps, excluded_categories,
           excluded_skus, return_window_days, :api_key_id
    FROM partners WHERE id = :partner_id
""")

EARN_RULES = text("""
    SELECT r.version, r.earn_points, r.earn_per_amount, r.cashback_bps,
           r.excluded_categories, r.excluded_skus, r.return_window_days, r.created_at
    FROM earn_rules r JOIN partners p ON p.id = r.partner_id
    WHERE r.partner_id = :partner_id AND p.program_id = :program_id
    ORDER BY r.version DESC
""")

LOCK_PROGRAM = text("SELECT 1 FROM programs WHERE id = :program_id FOR UPDATE")

NEW_LADDER = text("""
    INSERT INTO tier_ladders (program_id, version, window_months, tiers, api_key_id)
    SELECT :program_id, coalesce(max(version), 0) + 1, :window_months,
           CAST(:tiers AS jsonb), :api_key_id
    FROM tier_ladders WHERE program_id = :program_id
    RETURNING version, window_months, tiers, created_at
""")

CURRENT_LADDER = text("""
    SELECT version, window_months, tiers, created_at FROM tier_ladders
    WHERE program_id = :program_id ORDER BY version DESC LIMIT 1
""")

# Cards' tiers and qualifying spend over the ladder's window (the card view, the review; the
# posting engine reads the same in app/ledger/hot_repository.py CARD_STANDING).
CARD_TIERS = text("""
    SELECT c.id, c.tier, c.tier_since,
           (SELECT coalesce(sum(s.amount), 0) FROM card_spend s
            WHERE s.card_id = c.id
              AND s.month >= CAST(date_trunc('month', now())
                                  - make_interval(months => :window_months - 1) AS date))
           AS spend
    FROM cards c WHERE c.id = ANY(CAST(:cards AS bigint[]))
""")


async def new_earn_rule(conn: AsyncConnection, **values: Any) -> int | None:
    row = (await conn.execute(NEW_EARN_RULE, values)).first()
    return None if row is None else int(row.version)


async def first_earn_rule(
    conn: AsyncConnection, partner_id: uuid.UUID, api_key_id: uuid.UUID | None
) -> None:
    await conn.execute(FIRST_EARN_RULE, {"partner_id": partner_id, "api_key_id": api_key_id})


async def earn_rules(
    conn: AsyncConnection, program_id: int, partner_id: uuid.UUID
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "partner_id": partner_id}
    return list(await conn.execute(EARN_RULES, params))


async def new_ladder(
    conn: AsyncConnection,
    program_id: int,
    window_months: int,
    tiers: list[dict[str, Any]],
    api_key_id: uuid.UUID,
) -> Row[tuple[object, ...]]:
    # The program's row lock makes two new versions at once consecutive.
    await conn.execute(LOCK_PROGRAM, {"program_id": program_id})
    params = {
        "program_id": program_id,
        "window_months": window_months,
        "tiers": json.dumps(tiers),
        "api_key_id": api_key_id,
    }
    return (await conn.execute(NEW_LADDER, params)).one()


async def current_ladder(conn: AsyncConnection, program_id: int) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(CURRENT_LADDER, {"program_id": program_id})).first()


async def card_tiers(
    conn: AsyncConnection, card_ids: list[int], window_months: int
) -> list[Row[tuple[object, ...]]]:
    params = {"cards": card_ids, "window_months": window_months}
    return list(await conn.execute(CARD_TIERS, params))


# Qualifying spend and stamps follow the value when a card is replaced or merged into another.
MOVE_SPEND = text("""
    WITH moved AS (
        DELETE FROM card_spend WHERE card_id = :from_card RETURNING month, amount
    ),
    stamps AS (
        DELETE FROM card_stamps WHERE card_id = :from_card RETURNING campaign_id, stamps
    ),
    stamped AS (
        INSERT INTO card_stamps (campaign_id, card_id, stamps)
        SELECT campaign_id, :to_card, stamps FROM stamps
        ON CONFLICT (campaign_id, card_id)
        DO UPDATE SET stamps = card_stamps.stamps + EXCLUDED.stamps
    )
    INSERT INTO card_spend (card_id, month, amount)
    SELECT :to_card, month, amount FROM moved
    ON CONFLICT (card_id, month) DO UPDATE SET amount = card_spend.amount + EXCLUDED.amount
""")

# A purchase returned in full, or reversed, gives back the stamps it earned (a stamp that
# completed a card leaves the count at zero: the reward itself goes back with the return).
UNSTAMP = text("""
    UPDATE card_stamps s SET stamps = greatest(s.stamps - 1, 0)
    FROM earnings e
    JOIN transactions t ON t.id = e.transaction_id
    JOIN campaigns k ON k.program_id = t.program_id AND k.code = e.rule_ref AND k.kind = 'stamps'
    WHERE e.transaction_id = :accrual_id AND e.rule = 'campaign'
      AND s.campaign_id = k.id AND s.card_id = :card_id
""")

TIERS_OF = text("SELECT id, tier FROM cards WHERE id IN (:a, :b)")

SET_TIER = text("UPDATE cards SET tier = :tier, tier_since = now() WHERE id = :card_id")

# A return takes back qualifying spend from the month of the purchase.
ADD_SPEND = text("""
    INSERT INTO card_spend (card_id, month, amount)
    VALUES (:card_id, CAST(date_trunc('month', CAST(:at AS timestamptz) AT TIME ZONE 'UTC')
                           AS date), :amount)
    ON CONFLICT (card_id, month) DO UPDATE SET amount = card_spend.amount + EXCLUDED.amount
""")


async def move_spend(conn: AsyncConnection, from_card: int, to_card: int) -> None:
    await conn.execute(MOVE_SPEND, {"from_card": from_card, "to_card": to_card})


async def tiers_of(conn: AsyncConnection, a: int, b: int) -> dict[int, str | None]:
    return {r.id: r.tier for r in await conn.execute(TIERS_OF, {"a": a, "b": b})}


async def set_tier(conn: AsyncConnection, card_id: int, tier: str) -> None:
    await conn.execute(SET_TIER, {"card_id": card_id, "tier": tier})


async def add_spend(conn: AsyncConnection, card_id: int, at: object, amount: int) -> None:
    await conn.execute(ADD_SPEND, {"card_id": card_id, "at": at, "amount": amount})


CAMPAIGN_COLUMNS = """
    id, code, name, kind, points_pct, bonus_points, quiet_days, stamps_needed, min_amount,
    window_days, starts_at, ends_at, partner_id, categories, tiers, funded_by, budget_points,
    referrer_points, spent_points, version, created_at
"""

INSERT_CAMPAIGN = text(f"""
    INSERT INTO campaigns (id, program_id, code, name, kind, points_pct, bonus_points,
                           quiet_days, stamps_needed, min_amount, window_days, starts_at,
                           ends_at, partner_id, categories, tiers, funded_by, budget_points,
                           referrer_points, api_key_id)
    VALUES (:id, :program_id, :code, :name, :kind, :points_pct, :bonus_points, :quiet_days,
            :stamps_needed, :min_amount, :window_days, :starts_at, :ends_at, :partner_id,
            :categories, :tiers, :funded_by, :budget_points, :referrer_points, :api_key_id)
    ON CONFLICT (program_id, code) DO NOTHING
    RETURNING {CAMPAIGN_COLUMNS}
""")

CAMPAIGNS = text(f"""
    SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE program_id = :program_id
    ORDER BY starts_at DESC, code
""")

CAMPAIGN = text(f"""
    SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE program_id = :program_id AND id = :id
""")

# Ending early is the one change: a new version, so accruals before and after it differ. A
# campaign ended before it started keeps an empty window. (A purchase whose snapshot still saw
# the campaign waits for this row's lock at its write, and is rerun: app/ledger/engine.py.)
END_CAMPAIGN = text(f"""
    UPDATE campaigns SET ends_at = greatest(now(), starts_at), version = version + 1
    WHERE program_id = :program_id AND id = :id AND ends_at > now()
    RETURNING {CAMPAIGN_COLUMNS}
""")


async def insert_campaign(conn: AsyncConnection, **values: Any) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(INSERT_CAMPAIGN, values)).first()


async def campaigns(conn: AsyncConnection, program_id: int) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(CAMPAIGNS, {"program_id": program_id}))


async def campaign(
    conn: AsyncConnection, program_id: int, campaign_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(CAMPAIGN, {"program_id": program_id, "id": campaign_id})).first()


async def end_campaign(
    conn: AsyncConnection, program_id: int, campaign_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    params = {"program_id": program_id, "id": campaign_id}
    return (await conn.execute(END_CAMPAIGN, params)).first()


async def unstamp(conn: AsyncConnection, accrual_id: uuid.UUID, card_id: int) -> None:
    await conn.execute(UNSTAMP, {"accrual_id": accrual_id, "card_id": card_id})
