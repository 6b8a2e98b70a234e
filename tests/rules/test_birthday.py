"""Birthday campaigns: once a year, on the birthday or in the days after it."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from app.rules.campaigns import birthday_in, current_birthday
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key


def test_a_leap_day_birthday_falls_on_28_february_in_other_years() -> None:
    leap = date(2000, 2, 29)
    assert birthday_in(leap, 2027) == date(2027, 2, 28)
    assert birthday_in(leap, 2028) == date(2028, 2, 29)
    assert current_birthday(leap, date(2027, 2, 28), 0) == date(2027, 2, 28)
    assert current_birthday(leap, date(2027, 3, 1), 0) is None
    assert current_birthday(leap, date(2027, 3, 1), 1) == date(2027, 2, 28)
    assert current_birthday(leap, date(2028, 2, 28), 0) is None
    assert current_birthday(leap, date(2028, 2, 29), 0) == date(2028, 2, 29)


def test_a_birthday_window_may_cross_new_year() -> None:
    born = date(1990, 12, 30)
    assert current_birthday(born, date(2027, 1, 5), 6) == date(2026, 12, 30)  # six days on
    assert current_birthday(born, date(2027, 1, 6), 6) is None
    assert current_birthday(born, date(2026, 12, 29), 6) is None
    assert current_birthday(None, date(2026, 12, 30), 6) is None


async def _buy(client: AsyncClient, till: dict[str, str], card: str, at: datetime) -> Any:
    body = {
        "kind": "purchase",
        "card_number": card,
        "amount": 1_000,
        "currency": "EUR",
        "reference": idem()["Idempotency-Key"],
        "occurred_at": at.isoformat(),
    }
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return {a["rule_ref"]: a["points"] for a in r.json()["applied"] if a["rule"] == "campaign"}


async def test_a_birthday_bonus_once_a_year_in_its_window(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    now = datetime.now(UTC)
    birthday = (now - timedelta(days=10)).date()
    campaign = {
        "code": "birthday",
        "name": "Happy birthday",
        "kind": "birthday",
        "bonus_points": 300,
        "window_days": 2,
        "starts_at": (now - timedelta(days=60)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    r = await client.post("/v1/campaigns", json=campaign, headers=operator)
    assert r.status_code == 201, r.text
    card = await issue_card(
        client,
        operator,
        kind="personalized",
        customer_reference="cust-1",
        birth_date=birthday.replace(year=1990).isoformat(),
    )
    assert card["birth_date"] == birthday.replace(year=1990).isoformat()
    number = card["card_number"]
    on_the_day = datetime.combine(birthday, datetime.min.time(), UTC) + timedelta(hours=12)

    assert await _buy(client, till, number, on_the_day - timedelta(days=1)) == {}  # the eve
    assert await _buy(client, till, number, on_the_day + timedelta(days=1)) == {"birthday": 300}
    assert await _buy(client, till, number, on_the_day + timedelta(days=2)) == {}  # once
    assert await _buy(client, till, number, now) == {}  # after the window

    other = await issue_card(client, operator, kind="personalized", customer_reference="cust-2")
    assert await _buy(client, till, other["card_number"], on_the_day) == {}  # no birth date
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_a_birth_date_is_for_personalized_cards_only(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    r = await client.post("/v1/cards", json={"birth_date": "1990-01-01"}, headers=operator)
    assert (r.status_code, r.json()["code"]) == (422, "customer_reference_mismatch")
    body = {"kind": "personalized", "customer_reference": "c", "birth_date": "1990-02-30"}
    r = await client.post("/v1/cards", json=body, headers=operator)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
