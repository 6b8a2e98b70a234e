import uuid

from fastapi import APIRouter

from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.partners.errors import PartnerNotFound
from app.partners.schemas import EarnRuleCreate, EarnRuleRead, PartnerRead
from app.programs.deps import CurrentProgram
from app.rules import service
from app.rules.errors import CampaignCodeTaken, CampaignEnded, CampaignNotFound, NoTierLadder
from app.rules.schemas import CampaignCreate, CampaignRead, TierLadderCreate, TierLadderRead

router = APIRouter(tags=["rules"])


@router.put(
    "/v1/partners/{partner_id}/earn-rule",
    operation_id="set_earn_rule",
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed, PartnerNotFound),
)
async def set_earn_rule(
    partner_id: uuid.UUID,
    body: EarnRuleCreate,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
) -> PartnerRead:
    """A new version of the partner's earn rule (rates and exclusions), for purchases from now
    on. Each accrual records the version it earned by. Operator only."""
    return await service.set_earn_rule(conn, program, principal, partner_id, body)


@router.get(
    "/v1/partners/{partner_id}/earn-rules",
    operation_id="list_earn_rules",
    responses=problem_responses(Unauthorized, Forbidden, PartnerNotFound),
)
async def list_earn_rules(
    partner_id: uuid.UUID, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> list[EarnRuleRead]:
    """Every version of the partner's earn rule, newest first. Operator only."""
    return await service.earn_rules(conn, program, partner_id)


@router.put(
    "/v1/tiers",
    operation_id="set_tier_ladder",
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed),
)
async def set_tier_ladder(
    body: TierLadderCreate, conn: Conn, program: CurrentProgram, principal: OperatorPrincipal
) -> TierLadderRead:
    """A new version of the program's tier ladder: tiers by qualifying spend over a window of
    months, each adding a points and/or cashback bonus. A purchase that crosses a threshold
    moves the card up at once (the purchase itself earns at the tier before); cards move down
    only at the tier review (`loyalty-ledger tiers`). Operator only."""
    return await service.set_ladder(conn, program, principal, body)


@router.get(
    "/v1/tiers",
    operation_id="get_tier_ladder",
    responses=problem_responses(Unauthorized, Forbidden, NoTierLadder),
)
async def get_tier_ladder(
    conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> TierLadderRead:
    return await service.ladder(conn, program)


@router.post(
    "/v1/campaigns",
    status_code=201,
    operation_id="create_campaign",
    responses=problem_responses(
        Unauthorized, Forbidden, ValidationFailed, PartnerNotFound, CampaignCodeTaken
    ),
)
async def create_campaign(
    body: CampaignCreate, conn: Conn, program: CurrentProgram, principal: OperatorPrincipal
) -> CampaignRead:
    """A time-boxed bonus on purchases: a points multiplier (optionally on some categories of
    the basket) or a first-purchase bonus, optionally for one partner and some tiers, and
    capped by a budget of points that concurrent purchases never overspend. Each accrual
    lists the campaigns that applied and what each added. Operator only."""
    return await service.create_campaign(conn, program, principal, body)


@router.get(
    "/v1/campaigns",
    operation_id="list_campaigns",
    responses=problem_responses(Unauthorized, Forbidden),
)
async def list_campaigns(
    conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> list[CampaignRead]:
    """Every campaign, newest first, with the points each granted so far."""
    return await service.campaigns(conn, program)


@router.get(
    "/v1/campaigns/{campaign_id}",
    operation_id="get_campaign",
    responses=problem_responses(Unauthorized, Forbidden, CampaignNotFound),
)
async def get_campaign(
    campaign_id: uuid.UUID, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> CampaignRead:
    return await service.campaign(conn, program, campaign_id)


@router.post(
    "/v1/campaigns/{campaign_id}/end",
    operation_id="end_campaign",
    responses=problem_responses(Unauthorized, Forbidden, CampaignNotFound, CampaignEnded),
)
async def end_campaign(
    campaign_id: uuid.UUID, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> CampaignRead:
    """End the campaign now (a new version of it): purchases from now on do not get it."""
    return await service.end_campaign(conn, program, campaign_id)
