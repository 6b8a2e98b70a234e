"""Which of a card's points have expired, from its lots, in pure arithmetic.

A lot is what a card earned on one day, with the day it expires (the start of that day, in the
program's time zone; None: never). Spending never names a lot: points go first in, first out,
so what a card still has (`total`: its balance plus what its open holds reserve) is always its
newest lots. Walking the lots from the newest, the first `total` points are covered; the rest
were spent, clawed back or expired before. This makes a refund of a spend put the points back
into the lots they were taken from, and makes a clawback consume the oldest lots first.

`reserved`: the card's points that it cannot spend now but that are its own: on hold, or
pending (a return window). What is due now is what the card has beyond its lots that have not
expired yet, and never more than its available balance (reserved points are not taken; they are
due once released), nor more than its expired lots hold.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

NEVER = date.max


@dataclass(frozen=True)
class Lot:
    earned_on: date
    expires_on: date | None
    amount: int

    def alive_on(self, today: date) -> bool:
        return self.expires_on is None or self.expires_on > today


def _newest_first(lots: Iterable[Lot]) -> list[Lot]:
    return sorted(lots, key=lambda lot: (lot.expires_on or NEVER, lot.earned_on), reverse=True)


def covered(lots: Iterable[Lot], total: int) -> list[tuple[Lot, int]]:
    """Each lot with the part of it the card still has, newest first (zero parts left out)."""
    left = max(total, 0)
    parts = []
    for lot in _newest_first(lots):
        if left <= 0:
            break
        part = min(lot.amount, left)
        parts.append((lot, part))
        left -= part
    return parts


def due(balance: int, reserved: int, lots: Sequence[Lot], today: date, *, inactive: bool) -> int:
    """Points to expire now. `inactive`: the card went too long without activity, and all of
    its available points expire."""
    if balance <= 0:
        return 0
    if inactive:
        return balance
    alive = sum(lot.amount for lot in lots if lot.alive_on(today))
    expired = sum(lot.amount for lot in lots if not lot.alive_on(today))
    # Points no lot accounts for (none should be: every credit that is not a give-back has
    # one) are never taken: only points of a lot whose day came expire.
    return max(0, min(balance, balance + reserved - alive, expired))


@dataclass(frozen=True)
class NextExpiry:
    points: int
    on: date


def next_expiry(balance: int, reserved: int, lots: Sequence[Lot], today: date) -> NextExpiry | None:
    """The card's earliest points still to expire (after what is due now), and when."""
    total = balance + reserved - due(balance, reserved, lots, today, inactive=False)
    parts = [(lot, part) for lot, part in covered(lots, total) if lot.alive_on(today)]
    dated = [(lot.expires_on, part) for lot, part in parts if lot.expires_on is not None]
    if not dated:
        return None
    first = min(on for on, _ in dated)
    return NextExpiry(points=sum(part for on, part in dated if on == first), on=first)
