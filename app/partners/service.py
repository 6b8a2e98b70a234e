import uuid

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models.enums import AccountKind, Asset
from app.partners import repository
from app.partners.errors import PartnerCodeTaken, PartnerNotFound
from app.partners.schemas import EarnRateRead, PartnerCreate, PartnerRead
from app.rules import repository as rules


def read(row: Row[tuple[object, ...]]) -> PartnerRead:
    m = row._mapping
    return PartnerRead(
        id=m["id"],
        code=m["code"],
        name=m["name"],
        earn_rate=EarnRateRead(points=m["earn_points"], per_amount=m["earn_per_amount"]),
        cashback_bps=m["cashback_bps"],
        earn_rule_version=m["earn_rule_version"],
        excluded_categories=m["excluded_categories"],
        excluded_skus=m["excluded_skus"],
        can_earn=m["can_earn"],
        can_redeem=m["can_redeem"],
        return_window_days=m["return_window_days"],
        created_at=m["created_at"],
    )


async def create_partner(
    conn: AsyncConnection, program_id: int, req: PartnerCreate, api_key_id: uuid.UUID | None
) -> PartnerRead:
    row = await repository.insert(
        conn,
        program_id,
        {
            "code": req.code,
            "name": req.name,
            "earn_points": req.earn_rate.points,
            "earn_per_amount": req.earn_rate.per_amount,
            "cashback_bps": req.cashback_bps,
            "excluded_categories": req.excluded_categories,
            "excluded_skus": req.excluded_skus,
            "can_earn": req.can_earn,
            "can_redeem": req.can_redeem,
            "return_window_days": req.return_window_days,
        },
    )
    if row is None:
        raise PartnerCodeTaken(f"Partner code {req.code!r} is taken.")
    await repository.insert_accounts(
        conn,
        program_id,
        row.id,
        [AccountKind.PARTNER_ISSUED.value, AccountKind.PARTNER_REDEEMED.value],
        [a.value for a in Asset],
    )
    await rules.first_earn_rule(conn, row.id, api_key_id)
    return read(row)


async def get_partner(conn: AsyncConnection, program_id: int, partner_id: uuid.UUID) -> PartnerRead:
    row = await repository.get(conn, program_id, partner_id)
    if row is None:
        raise PartnerNotFound()
    return read(row)
