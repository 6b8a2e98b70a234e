"""Seed a benchmark database: partners with till keys through the service layer, and cards
in bulk SQL (10,000 cards through HTTP would be a benchmark of its own), each card funded with
points by one balanced award transaction so redemptions have something to spend."""

import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.auth.schemas import ApiKeyCreate
from app.auth.service import create_key
from app.cards.numbers import luhn_check_digit
from app.core.config import Settings
from app.db.engine import create_engine
from app.models.enums import AccountKind, ApiKeyRole, Asset
from app.partners.schemas import PartnerCreate
from app.partners.service import create_partner
from app.programs.service import ensure_program

FUNDING_POINTS = 1_000_000

INSERT_CARDS = text("""
    WITH new_cards AS (
        INSERT INTO cards (program_id, card_number, kind, status)
        SELECT :program_id, n, 'bearer', 'active' FROM unnest(CAST(:numbers AS text[])) AS n
        RETURNING id
    )
    INSERT INTO accounts (program_id, kind, asset, card_id, balance, held, pending)
    SELECT :program_id, 'card', a.asset, new_cards.id, 0, 0, 0
    FROM new_cards, (VALUES ('points'), ('cashback')) AS a(asset)
""")

FUND_CARDS = text("""
    WITH card_accounts AS (
        SELECT card_id, id AS account_id FROM accounts
        WHERE program_id = :program_id AND kind = 'card' AND asset = 'points'
    ),
    awards AS (
        INSERT INTO transactions (id, program_id, type, card_id, api_key_id, description,
                                  occurred_at)
        SELECT gen_random_uuid(), :program_id, 'award', card_id, :api_key_id,
               'benchmark funding', now()
        FROM card_accounts
        RETURNING id, card_id
    )
    INSERT INTO entries (transaction_id, account_id, asset, amount)
    SELECT awards.id, card_accounts.account_id, 'points', :points
    FROM awards JOIN card_accounts USING (card_id)
    UNION ALL
    SELECT awards.id, :operator_account, 'points', -CAST(:points AS bigint) FROM awards
""")

SET_FUNDED_BALANCES = text("""
    UPDATE accounts SET balance = :points
    WHERE program_id = :program_id AND kind = 'card' AND asset = 'points'
""")


def card_numbers(count: int, rng: random.Random) -> list[str]:
    numbers: set[str] = set()
    while len(numbers) < count:
        partial = "8" + "".join(str(rng.randrange(10)) for _ in range(14))
        numbers.add(partial + luhn_check_digit(partial))
    return sorted(numbers)


async def seed(database_url: str, cards: int, partners: int) -> dict[str, Any]:
    settings = Settings(database_url=database_url, _env_file=None)
    engine = create_engine(database_url, settings)
    rng = random.Random(20261123)
    try:
        async with engine.begin() as conn:
            program = await ensure_program(conn, settings)
            operator = await create_key(
                conn, program.id, ApiKeyCreate(name="bench operator", role=ApiKeyRole.OPERATOR)
            )
            partner_rows = []
            for i in range(partners):
                partner = await create_partner(
                    conn,
                    program.id,
                    PartnerCreate.model_validate(
                        {
                            "code": f"bench-{i}",
                            "name": f"Bench partner {i}",
                            "earn_rate": {"points": 1, "per_amount": 100},
                            "cashback_bps": 200,
                        }
                    ),
                    operator.id,
                )
                till = await create_key(
                    conn,
                    program.id,
                    ApiKeyCreate(
                        name=f"bench till {i}", role=ApiKeyRole.PARTNER, partner_id=partner.id
                    ),
                )
                partner_rows.append({"id": str(partner.id), "key": till.key})
            numbers = card_numbers(cards, rng)
            await conn.execute(INSERT_CARDS, {"program_id": program.id, "numbers": numbers})
            operator_account = program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS)
            await conn.execute(
                FUND_CARDS,
                {
                    "program_id": program.id,
                    "api_key_id": operator.id,
                    "operator_account": operator_account,
                    "points": FUNDING_POINTS,
                },
            )
            await conn.execute(
                SET_FUNDED_BALANCES, {"program_id": program.id, "points": FUNDING_POINTS}
            )
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return {"operator_key": operator.key, "partners": partner_rows, "cards": numbers}


def write_seed(data: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(data))
