import uuid

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

INSERT_PARTNER = text("""
    INSERT INTO partners
        (id, program_id, code, name, earn_points, earn_per_amount, cashback_bps,
         excluded_categories, excluded_skus, can_earn, can_redeem, return_window_days)
    VALUES
        (:id, :program_id, :code, :name, :earn_points, :earn_per_amount, :cashback_bps,
         :excluded_categories, :excluded_skus, :can_earn, :can_redeem, :return_window_days)
    ON CONFLICT (program_id, code) DO NOTHING
    RETURNING id, code, name, earn_points, earn_per_amount, cashback_bps, earn_rule_version,
              excluded_categories, excluded_skus, can_earn, can_redeem, return_window_days,
              created_at
""")

# A partner's system accounts: what it issued and what was redeemed at it, per asset.
INSERT_PARTNER_ACCOUNTS = text("""
    INSERT INTO accounts (program_id, kind, asset, partner_id)
    SELECT :program_id, kind, asset, :partner_id
    FROM unnest(CAST(:kinds AS text[])) AS k(kind), unnest(CAST(:assets AS text[])) AS a(asset)
""")

GET_PARTNER = text("""
    SELECT id, code, name, earn_points, earn_per_amount, cashback_bps, earn_rule_version,
           excluded_categories, excluded_skus, can_earn, can_redeem, return_window_days,
              created_at
    FROM partners WHERE id = :id AND program_id = :program_id
""")

PARTNER_EXISTS = text("SELECT 1 FROM partners WHERE id = :id AND program_id = :program_id")


async def insert(
    conn: AsyncConnection, program_id: int, values: dict[str, object]
) -> Row[tuple[object, ...]] | None:
    params = {"id": uuid.uuid4(), "program_id": program_id, **values}
    return (await conn.execute(INSERT_PARTNER, params)).first()


async def insert_accounts(
    conn: AsyncConnection,
    program_id: int,
    partner_id: uuid.UUID,
    kinds: list[str],
    assets: list[str],
) -> None:
    await conn.execute(
        INSERT_PARTNER_ACCOUNTS,
        {"program_id": program_id, "partner_id": partner_id, "kinds": kinds, "assets": assets},
    )


async def get(
    conn: AsyncConnection, program_id: int, partner_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(GET_PARTNER, {"id": partner_id, "program_id": program_id})).first()


async def exists(conn: AsyncConnection, program_id: int, partner_id: uuid.UUID) -> bool:
    params = {"id": partner_id, "program_id": program_id}
    return (await conn.execute(PARTNER_EXISTS, params)).first() is not None
