from datetime import datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import ResponseModel


class RuleCost(ResponseModel):
    rule: Literal["base", "tier", "campaign"]
    rule_ref: str = Field(description="The partner's id, the tier's code, or the campaign's.")
    name: str | None = Field(description="The partner's or the campaign's name.")
    purchases: int = Field(description="Purchases the rule added to.")
    cards: int = Field(description="Distinct cards it reached.")
    points: int = Field(description="Points it granted.")
    cashback: int = Field(description="Cashback it granted, in minor units.")
    points_value: int = Field(
        description="The points' money value at the issue price each purchase recorded "
        "(minor units); points earned where no price was set count nothing."
    )
    unpriced_points: int = Field(description="Points granted at a partner with no price set.")
    cost: int = Field(description="What the rule gave away in money: points_value + cashback.")


class RulesReport(ResponseModel):
    """What each rule granted over [since, until), as recorded when each purchase was posted
    (later rule changes do not rewrite it). Gross of returns: a return takes back in
    proportion to everything its purchase earned, not rule by rule."""

    since: datetime
    until: datetime
    currency: str
    rules: list[RuleCost]
