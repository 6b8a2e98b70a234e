import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from starlette.responses import Response

from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.money import points_value
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.programs.deps import CurrentProgram
from app.reports import breakage, liability, repository, rollforward
from app.reports.csv_export import csv_response
from app.reports.errors import InvalidPeriod
from app.reports.schemas import (
    AssetTotals,
    BreakageReport,
    Cohort,
    ExpiredMonth,
    ExpiryBuckets,
    LiabilityReport,
    LiabilitySource,
    RollForwardReport,
    RollForwardRow,
    RuleCost,
    RulesReport,
)
from app.settlement.periods import Length, period_of, periods_between

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


Format = Annotated[Literal["json", "csv"], Query(description="`csv`: one row per item.")]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/csv": {}}}
}


@dataclass
class Source:
    """Where outstanding value was earned: a partner, or the operator (no code)."""

    code: str | None
    price: int | None
    issued: dict[str, int] = field(default_factory=lambda: {"points": 0, "cashback": 0})


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
    moment = as_of or datetime.now(UTC)
    owed = await liability.outstanding(conn, program.id, moment)
    sources: dict[uuid.UUID | None, Source] = {}
    for row in await liability.issued(conn, program.id, moment):
        source = sources.setdefault(row.partner_id, Source(row.partner_code, row.issue_per_1000))
        source.issued[row.asset] = int(row.issued)
    # The operator first, then partners by code: a stable order for the largest remainders.
    keys = sorted(sources, key=lambda k: (k is not None, sources[k].code or ""))
    points = liability.shares(owed["points"], [sources[k].issued["points"] for k in keys])
    cashback = liability.shares(owed["cashback"], [sources[k].issued["cashback"] for k in keys])
    by_source = [
        LiabilitySource(
            partner_id=key,
            partner_code=sources[key].code,
            points=share,
            cashback=cash,
            issue_per_1000=sources[key].price,
            points_value=points_value(share, sources[key].price),
        )
        for key, share, cash in zip(keys, points, cashback, strict=True)
    ]
    buckets = None
    if as_of is None:
        today = datetime.now(ZoneInfo(program.timezone)).date()
        found = await liability.expiry_buckets(conn, program.id, today)
        buckets = ExpiryBuckets(**{k: int(v) for k, v in found._mapping.items()})
    report = LiabilityReport(
        as_of=moment,
        currency=program.currency,
        outstanding=AssetTotals(**owed),
        points_value=sum(s.points_value for s in by_source),
        by_source=by_source,
        expiry_buckets=buckets,
    )
    if format == "csv":
        return csv_response(report.by_source, "liability", {"as_of": moment.isoformat()})
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
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=365)
    if since >= until:
        raise InvalidPeriod(f"since ({since.isoformat()}) is not before until.")
    months = await breakage.expired_by_month(conn, program.id, program.timezone, since, until)
    cohorts = await breakage.cohorts(conn, program.id, program.timezone, since, until)
    report = BreakageReport(
        since=since,
        until=until,
        expired_by_month=[ExpiredMonth(**r._mapping) for r in months],
        cohorts=[
            Cohort(
                cohort=r.cohort,
                issued=int(r.issued),
                expired=int(r.expired),
                rate_bps=breakage.rate_bps(int(r.expired), int(r.issued)),
            )
            for r in cohorts
        ],
    )
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
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=365)
    if since >= until:
        raise InvalidPeriod(f"since ({since.isoformat()}) is not before until.")
    periods = periods_between(since, until, period, program.timezone, limit=400)
    current = period_of(until, period, program.timezone)
    if not periods or periods[-1][1] < until:
        periods.append((max(current[0], since), until))
    periods[0] = (max(periods[0][0], since), periods[0][1])
    rows = await rollforward.roll_forward(conn, program.id, periods)
    report = RollForwardReport(
        period=period,
        since=since,
        until=until,
        currency=program.currency,
        rows=[
            RollForwardRow(
                **{
                    k: (int(v) if isinstance(v, int | Decimal) else v)
                    for k, v in r._mapping.items()
                },
                reconciles=r.opening + r.issued - r.redeemed - r.expired + r.adjustments
                == r.closing,
            )
            for r in rows
        ],
    )
    if format == "csv":
        return csv_response(report.rows, "roll-forward")
    return Response(report.model_dump_json(), media_type="application/json")
