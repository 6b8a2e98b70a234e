from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from starlette.responses import Response

from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.programs.deps import CurrentProgram
from app.reports import service
from app.reports.csv_export import csv_response
from app.reports.errors import InvalidPeriod
from app.reports.schemas import BreakageReport, LiabilityReport, RollForwardReport, RulesReport
from app.settlement.periods import Length

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
    return await service.rules_report(conn, program, *service.window(since, until, 30))


Format = Annotated[Literal["json", "csv"], Query(description="`csv`: one row per item.")]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/csv": {}}}
}


@router.get(
    "/v1/reports/liability",
    operation_id="report_liability",
    response_model=LiabilityReport,
    responses={**_RESPONSES, **problem_responses(Unauthorized, Forbidden, ValidationFailed)},
)
async def report_liability(
    conn: Conn,
    program: CurrentProgram,
    _: OperatorPrincipal,
    as_of: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
    format: Format = "json",
) -> Response:
    """Points and cashback the program owes its cardholders at `as_of` (on cards, on hold,
    pending), per partner where they were earned (in proportion to what each issued, net) and
    in total, valued at each partner's issue price then; today, with points by when they
    expire. Operator only."""
    report = await service.liability_report(conn, program, as_of)
    if format == "csv":
        return csv_response(report.by_source, "liability", {"as_of": report.as_of.isoformat()})
    return Response(report.model_dump_json(), media_type="application/json")


@router.get(
    "/v1/reports/breakage",
    operation_id="report_breakage",
    response_model=BreakageReport,
    responses={
        **_RESPONSES,
        **problem_responses(Unauthorized, Forbidden, ValidationFailed, InvalidPeriod),
    },
)
async def report_breakage(
    conn: Conn,
    program: CurrentProgram,
    _: OperatorPrincipal,
    since: Annotated[AwareDatetime | None, Query(description="Default: a year ago.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
    format: Format = "json",
) -> Response:
    """Points expired per month, and per cohort (the month they were earned in) the share of
    what it issued that expired. CSV: the cohorts. Operator only."""
    report = await service.breakage_report(conn, program, *service.window(since, until, 365))
    if format == "csv":
        return csv_response(report.cohorts, "breakage")
    return Response(report.model_dump_json(), media_type="application/json")


@router.get(
    "/v1/reports/roll-forward",
    operation_id="report_roll_forward",
    response_model=RollForwardReport,
    responses={
        **_RESPONSES,
        **problem_responses(Unauthorized, Forbidden, ValidationFailed, InvalidPeriod),
    },
)
async def report_roll_forward(
    conn: Conn,
    program: CurrentProgram,
    _: OperatorPrincipal,
    period: Annotated[Length, Query()] = "monthly",
    since: Annotated[
        AwareDatetime | None, Query(description="Default: the period a year ago.")
    ] = None,
    until: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
    format: Format = "json",
) -> Response:
    """Per period (in the program's time zone) and asset: opening liability + issued -
    redeemed - expired + adjustments = closing liability, reconciling to the ledger to the
    point. The current period runs to `until`. Operator only."""
    since, until = service.window(since, until, 365)
    report = await service.roll_forward_report(conn, program, period, since, until)
    if format == "csv":
        return csv_response(report.rows, "roll-forward")
    return Response(report.model_dump_json(), media_type="application/json")
