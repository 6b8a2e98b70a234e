from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.programs.deps import CurrentProgram
from app.reports import repository
from app.reports.errors import InvalidPeriod
from app.reports.schemas import RuleCost, RulesReport

router = APIRouter(tags=["reports"])


@router.get(
    "/v1/reports/rules",
    operation_id="report_rules",
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed, InvalidPeriod),
)
async def report_rules(
    conn: Conn,
    program: CurrentProgram,
    _: OperatorPrincipal,
    since: Annotated[AwareDatetime | None, Query(description="Default: 30 days ago.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
) -> RulesReport:
    """Per partner earn rule, tier and campaign, over a period: points and cashback granted,
    purchases and cards reached. What a campaign cost, before deciding to run it again.
    Operator only."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=30)
    if since >= until:
        raise InvalidPeriod(f"since ({since.isoformat()}) is not before until.")
    rows = await repository.rules(conn, program.id, since, until)
    return RulesReport(
        since=since,
        until=until,
        currency=program.currency,
        rules=[
            RuleCost(
                **{**r._mapping, "points_value": int(r.points_value or 0)},
                cost=int(r.points_value or 0) + int(r.cashback),
            )
            for r in rows
        ],
    )
