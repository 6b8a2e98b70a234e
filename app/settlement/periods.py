"""Settlement periods in the program's time zone, as pure functions: a day, an ISO week
(Monday first) or a calendar month, each from local midnight to local midnight."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Length = Literal["daily", "weekly", "monthly"]


def _first_day(day: date, length: Length) -> date:
    if length == "daily":
        return day
    if length == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_first_day(first: date, length: Length) -> date:
    if length == "daily":
        return first + timedelta(days=1)
    if length == "weekly":
        return first + timedelta(days=7)
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def period_of(moment: datetime, length: Length, timezone: str) -> tuple[datetime, datetime]:
    """The period `moment` falls in: [start, end), both in UTC."""
    zone = ZoneInfo(timezone)
    first = _first_day(moment.astimezone(zone).date(), length)
    return _midnight(first, zone), _midnight(_next_first_day(first, length), zone)


def periods_between(
    start: datetime, now: datetime, length: Length, timezone: str, limit: int = 1000
) -> list[tuple[datetime, datetime]]:
    """The complete periods from the one `start` falls in up to `now` (each ends by `now`)."""
    found: list[tuple[datetime, datetime]] = []
    period = period_of(start, length, timezone)
    while period[1] <= now and len(found) < limit:
        found.append(period)
        period = period_of(period[1], length, timezone)
    return found
