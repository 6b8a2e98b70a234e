"""The reports, assembled from their queries (repository.py, liability.py, breakage.py,
rollforward.py); the router only parses and renders them."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.money import points_value
from app.programs.service import ProgramContext
from app.reports import breakage, liability, repository, rollforward
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


def window(since: datetime | None, until: datetime | None, days: int) -> tuple[datetime, datetime]:
    """[since, until): until defaults to now, since to `days` before it."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=days)
    if since >= until:
        raise InvalidPeriod(f"since ({since.isoformat()}) is not before until.")
    return since, until


async def rules_report(
    conn: AsyncConnection, program: ProgramContext, since: datetime, until: datetime
) -> RulesReport:
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


@dataclass
class Source:
    """Where outstanding value was earned: a partner, or the operator (no code)."""

    code: str | None
    price: int | None
    issued: dict[str, int] = field(default_factory=lambda: {"points": 0, "cashback": 0})


async def liability_report(
    conn: AsyncConnection, program: ProgramContext, as_of: datetime | None
) -> LiabilityReport:
    """`as_of` None: now, with expiry buckets."""
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
    return LiabilityReport(
        as_of=moment,
        currency=program.currency,
        outstanding=AssetTotals(**owed),
        points_value=sum(s.points_value for s in by_source),
        by_source=by_source,
        expiry_buckets=buckets,
    )


async def breakage_report(
    conn: AsyncConnection, program: ProgramContext, since: datetime, until: datetime
) -> BreakageReport:
    months = await breakage.expired_by_month(conn, program.id, program.timezone, since, until)
    cohorts = await breakage.cohorts(conn, program.id, program.timezone, since, until)
    return BreakageReport(
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


async def roll_forward_report(
    conn: AsyncConnection,
    program: ProgramContext,
    period: Length,
    since: datetime,
    until: datetime,
) -> RollForwardReport:
    """The whole periods in [since, until), the first cut at `since`, the last at `until`."""
    periods = periods_between(since, until, period, program.timezone, limit=400)
    current = period_of(until, period, program.timezone)
    if not periods or periods[-1][1] < until:
        periods.append((max(current[0], since), until))
    periods[0] = (max(periods[0][0], since), periods[0][1])
    rows = await rollforward.roll_forward(conn, program.id, periods)
    return RollForwardReport(
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
