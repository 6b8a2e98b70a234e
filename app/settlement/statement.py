"""A partner's statement from what its accounts moved, as pure arithmetic.

What moved is read per (kind of movement, asset, correction or not, price, late or not): see
`Movement`. Each becomes a line:
  - points the partner's customers earned there (`points_issued`): the partner pays their
    value at its issue price; returned or reversed ones (`points_issued_returned`) come off;
  - points redeemed there (`points_accepted`): the operator pays their value at the partner's
    reimbursement; refunded or reversed ones come off;
  - cashback the partner granted: the partner pays it if its terms when the purchase was made
    said it funds its cashback (`cashback_issued`), else the operator does and the line is
    worth nothing between them (`cashback_issued_by_operator`);
  - cashback spent there: the operator pays it.
Values are rounded once per line (half away from zero), from points times the price per
1,000 points. Then the fees: a fixed one per period, and basis points of the value of the
points issued net of returns. The net amount is the sum of the lines: positive, the partner
pays the operator; negative, the operator pays the partner.
"""

from dataclasses import dataclass

from app.core.money import divide_rounded, points_value
from app.models.enums import AccountKind, Asset


@dataclass(frozen=True)
class Movement:
    """Entries on the partner's own points or cashback accounts, summed per group."""

    account_kind: str
    """partner_issued or partner_redeemed"""
    asset: str
    correction: bool
    """Refunds and reversals (of what the partner issued or accepted)."""
    points_price: int | None
    cashback_funded: bool | None
    """Cashback the partner issued: whether it funded it (by its terms when granted)."""
    late: bool
    postings: int
    total: int
    """Sum of the entries, from the partner account's point of view."""


@dataclass(frozen=True)
class Terms:
    """The partner's fees, by its terms at the period's end."""

    fee_per_period: int
    fee_bps: int


@dataclass(frozen=True)
class Line:
    kind: str
    late: bool
    points_price: int | None
    postings: int
    quantity: int
    """Points or cashback (minor units): what happened, positive for the movement itself,
    negative for its corrections."""
    amount: int
    """Money (minor units): positive, the partner owes it; negative, the operator does."""


def line_for(movement: Movement, terms: Terms) -> Line:
    issued = movement.account_kind == AccountKind.PARTNER_ISSUED
    # Issued: the partner account went down by what its customers earned. Accepted: up by
    # what they spent there.
    quantity = -movement.total if issued else movement.total
    side = "issued" if issued else "accepted"
    by_operator = issued and movement.asset == Asset.CASHBACK and not movement.cashback_funded
    kind = f"{movement.asset}_{side}" + ("_by_operator" if by_operator else "")
    kind += "_corrected" if movement.correction else ""
    if movement.asset == Asset.POINTS:
        value = points_value(quantity, movement.points_price)
    elif by_operator:
        value = 0
    else:
        value = quantity
    return Line(
        kind=kind,
        late=movement.late,
        points_price=movement.points_price if movement.asset == Asset.POINTS else None,
        postings=movement.postings,
        quantity=quantity,
        amount=value if issued else -value,
    )


def statement_lines(movements: list[Movement], terms: Terms) -> list[Line]:
    """The lines, movements first (in a stable order), then the fees; empty when nothing
    moved and no fee applies."""
    lines = [line_for(m, terms) for m in movements]
    lines.sort(key=lambda line: (line.late, line.kind, line.points_price or 0))
    issued_value = sum(line.amount for line in lines if line.kind.startswith("points_issued"))
    if lines and terms.fee_bps and issued_value > 0:
        fee = divide_rounded(issued_value * terms.fee_bps, 10_000)
        lines.append(Line("fee_percentage", False, None, 0, issued_value, fee))
    if terms.fee_per_period:
        lines.append(Line("fee_fixed", False, None, 0, 0, terms.fee_per_period))
    return lines


def net_amount(lines: list[Line]) -> int:
    return sum(line.amount for line in lines)
