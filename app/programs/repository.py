from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

UPSERT_PROGRAM = text("""
    INSERT INTO programs (code, name, currency, timezone)
    VALUES (:code, :name, :currency, :timezone)
    ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone
    RETURNING id, code, name, currency, timezone
""")

ENSURE_OPERATOR_ACCOUNTS = text("""
    INSERT INTO accounts (program_id, kind, asset)
    SELECT :program_id, kind, asset
    FROM unnest(CAST(:kinds AS text[])) AS k(kind), unnest(CAST(:assets AS text[])) AS a(asset)
    ON CONFLICT (program_id, kind, asset) WHERE kind LIKE 'operator_%' DO NOTHING
""")

OPERATOR_ACCOUNTS = text("""
    SELECT id, kind, asset FROM accounts
    WHERE program_id = :program_id AND kind LIKE 'operator_%'
""")


async def upsert_program(
    conn: AsyncConnection, code: str, name: str, currency: str, timezone: str
) -> dict[str, object]:
    row = (
        await conn.execute(
            UPSERT_PROGRAM,
            {"code": code, "name": name, "currency": currency, "timezone": timezone},
        )
    ).one()
    return dict(row._mapping)


async def ensure_operator_accounts(
    conn: AsyncConnection, program_id: int, kinds: list[str], assets: list[str]
) -> dict[tuple[str, str], int]:
    await conn.execute(
        ENSURE_OPERATOR_ACCOUNTS, {"program_id": program_id, "kinds": kinds, "assets": assets}
    )
    rows = await conn.execute(OPERATOR_ACCOUNTS, {"program_id": program_id})
    return {(r.kind, r.asset): r.id for r in rows}
