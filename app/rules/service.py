"""Use cases of the rules: new versions of a partner's earn rule and of the tier ladder, a
card's place on the ladder, and campaigns."""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.partners import repository as partners
from app.partners import service as partner_service
from app.partners.errors import PartnerNotFound
from app.partners.schemas import EarnRateRead, EarnRuleCreate, EarnRuleRead, PartnerRead
from app.programs.service import ProgramContext
from app.rules import repository
from app.rules.errors import CampaignCodeTaken, CampaignEnded, CampaignNotFound, NoTierLadder
from app.rules.schemas import (
    CampaignCreate,
    CampaignRead,
    CardTierRead,
    TierLadderCreate,
    TierLadderRead,
    TierRead,
)
from app.rules.tiers import Ladder


async def set_earn_rule(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    partner_id: uuid.UUID,
    req: EarnRuleCreate,
) -> PartnerRead:
    version = await repository.new_earn_rule(
        conn,
        program_id=program.id,
        partner_id=partner_id,
        earn_points=req.earn_rate.points,
        earn_per_amount=req.earn_rate.per_amount,
        cashback_bps=req.cashback_bps,
        excluded_categories=req.excluded_categories,
        excluded_skus=req.excluded_skus,
        return_window_days=req.return_window_days,
        api_key_id=principal.api_key_id,
    )
    if version is None:
        raise PartnerNotFound()
    row = await partners.get(conn, program.id, partner_id)
    assert row is not None
    return partner_service.read(row)


async def earn_rules(
    conn: AsyncConnection, program: ProgramContext, partner_id: uuid.UUID
) -> list[EarnRuleRead]:
    rows = await repository.earn_rules(conn, program.id, partner_id)
    if not rows:
        raise PartnerNotFound()
    return [
        EarnRuleRead(
            version=r.version,
            earn_rate=EarnRateRead(points=r.earn_points, per_amount=r.earn_per_amount),
            cashback_bps=r.cashback_bps,
            excluded_categories=r.excluded_categories,
            excluded_skus=r.excluded_skus,
            return_window_days=r.return_window_days,
            created_at=r.created_at,
        )
        for r in rows
    ]


def _ladder_read(row: Any) -> TierLadderRead:
    return TierLadderRead(
        version=row.version,
        window_months=row.window_months,
        tiers=[TierRead(**t) for t in row.tiers],
        created_at=row.created_at,
    )


async def set_ladder(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, req: TierLadderCreate
) -> TierLadderRead:
    tiers = [t.model_dump() for t in req.tiers]
    row = await repository.new_ladder(
        conn, program.id, req.window_months, tiers, principal.api_key_id
    )
    return _ladder_read(row)


async def ladder(conn: AsyncConnection, program: ProgramContext) -> TierLadderRead:
    row = await repository.current_ladder(conn, program.id)
    if row is None:
        raise NoTierLadder()
    return _ladder_read(row)


async def card_tier(
    conn: AsyncConnection, program: ProgramContext, card_id: int
) -> CardTierRead | None:
    """Where the card stands; None while the program has no ladder."""
    row = await repository.current_ladder(conn, program.id)
    if row is None:
        return None
    ladder = Ladder.from_stored(row.version, row.window_months, row.tiers)
    [card] = await repository.card_tiers(conn, [card_id], ladder.window_months)
    tier = ladder.current(card.tier, card.spend)
    above = ladder.above(tier)
    return CardTierRead(
        code=tier.code,
        name=tier.name,
        since=card.tier_since if card.tier == tier.code else None,
        qualifying_spend=card.spend,
        next_tier=above.code if above else None,
        to_next_tier=max(0, above.threshold - card.spend) if above else None,
    )


async def move_tier(
    conn: AsyncConnection, program: ProgramContext, from_card: int, to_card: int
) -> None:
    """A replaced or merged card's tier and qualifying spend go to the card that takes its
    value (a merge keeps the higher of the two tiers, and adds the spends). The caller holds
    both cards' account locks."""
    await repository.move_spend(conn, from_card, to_card)
    tiers = await repository.tiers_of(conn, from_card, to_card)
    moving, keeping = tiers[from_card], tiers[to_card]
    if moving is None or moving == keeping:
        return
    row = await repository.current_ladder(conn, program.id)
    if keeping is not None and row is not None:
        ladder = Ladder.from_stored(row.version, row.window_months, row.tiers)
        if ladder.rank(keeping) >= ladder.rank(moving):
            return
    await repository.set_tier(conn, to_card, moving)


async def create_campaign(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, req: CampaignCreate
) -> CampaignRead:
    if req.partner_id is not None and not await partners.exists(conn, program.id, req.partner_id):
        raise PartnerNotFound()
    row = await repository.insert_campaign(
        conn,
        id=uuid.uuid4(),
        program_id=program.id,
        api_key_id=principal.api_key_id,
        **req.model_dump(),
    )
    if row is None:
        raise CampaignCodeTaken(f"Campaign code {req.code!r} is taken.")
    return CampaignRead(**row._mapping)


async def campaigns(conn: AsyncConnection, program: ProgramContext) -> list[CampaignRead]:
    return [CampaignRead(**r._mapping) for r in await repository.campaigns(conn, program.id)]


async def campaign(
    conn: AsyncConnection, program: ProgramContext, campaign_id: uuid.UUID
) -> CampaignRead:
    row = await repository.campaign(conn, program.id, campaign_id)
    if row is None:
        raise CampaignNotFound()
    return CampaignRead(**row._mapping)


async def end_campaign(
    conn: AsyncConnection, program: ProgramContext, campaign_id: uuid.UUID
) -> CampaignRead:
    row = await repository.end_campaign(conn, program.id, campaign_id)
    if row is None:
        await campaign(conn, program, campaign_id)  # 404 if there is no such campaign
        raise CampaignEnded()
    return CampaignRead(**row._mapping)
