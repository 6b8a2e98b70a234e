"""Bad input is refused with a problem document and moves nothing.

Every case asserts the status, the `application/problem+json` media type and the stable `code`;
validation errors must point (RFC 6901, into the request) at the offending field. Every case
also compares a snapshot of the ledger (transaction, entry, card, partner and account counts,
and every account's balance) taken before and after the request: a refused request writes
nothing.

The table has well over a hundred cases. A fresh database per case costs ~0.4 s, so the table
runs against one ledger built once for this module (`world`) from the same migrated template
the per-test fixtures use; each case still compares its own before/after snapshot, so a case
that wrongly wrote something fails by itself. Tests that build their own state use the usual
per-test fixtures.
"""

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cards.numbers import luhn_check_digit
from app.core.config import Settings
from app.core.schemas import MAX_AMOUNT
from app.main import create_app
from tests.conftest import _admin, _with_database, idem
from tests.factories.api_keys import insert_api_key
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import create_partner, partner_with_key

PROBLEM_JSON = "application/problem+json"
MAX_BODY = Settings.model_fields["max_body_bytes"].default

# Placeholders in bodies and paths, replaced per test by values of the world's ledger.
CARD = "<card>"
CARD_INT = "<card:int>"
BAD_LUHN = "<card:bad-luhn>"
BLOCKED = "<blocked>"
UNKNOWN_CARD = "<unknown-card>"
CLOSED_PARTNER = "<closed-partner>"
REF = "<ref>"
EXISTING_REF = "R-EXISTING"
SPENT_REF = "R-SPENT"
DROP = object()
"""A field value meaning: leave the field out."""


# --------------------------------------------------------------------------------------------
# The shared ledger


@dataclass
class World:
    app: FastAPI
    client: AsyncClient
    engine: AsyncEngine
    operator: dict[str, str]
    till: dict[str, str]
    values: dict[str, Any]


def _unknown_card_number() -> str:
    """Luhn-valid, but with a prefix the program never issues ('7')."""
    partial = "9" + uuid.uuid4().int.__str__()[:14]
    return partial + luhn_check_digit(partial)


def _break_luhn(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


@pytest.fixture(scope="module")
async def world(cluster_url: str, template_db: str) -> AsyncIterator[World]:
    name = f"ll_bad_input_{os.getpid()}"
    await _admin(
        cluster_url,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"',
    )
    settings = Settings(
        database_url=_with_database(cluster_url, name), program_currency="EUR", _env_file=None
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://ledger.test") as client:
                operator = {"Authorization": f"Bearer {await insert_api_key(app, role='operator')}"}
                _, till = await partner_with_key(app, client, operator)
                closed = await create_partner(client, operator, can_earn=False, can_redeem=False)

                # A card with points and cashback, so "balances unchanged" means something.
                card = await funded_card(client, operator, 1_000)
                r = await client.post(
                    "/v1/accruals",
                    json={
                        "kind": "purchase",
                        "card_number": card["card_number"],
                        "amount": 10_000,
                        "currency": "EUR",
                        "reference": EXISTING_REF,
                    },
                    headers={**till, **idem()},
                )
                assert r.status_code == 201, r.text
                assert r.json()["balance"] == {"points": 1_100, "cashback": 500}

                r = await client.post(
                    "/v1/redemptions",
                    json={
                        "card_number": card["card_number"],
                        "asset": "points",
                        "amount": 100,
                        "reference": SPENT_REF,
                    },
                    headers={**till, **idem()},
                )
                assert r.status_code == 201, r.text
                assert r.json()["balance"] == {"points": 1_000, "cashback": 500}

                blocked = await funded_card(client, operator, 1_000)
                r = await client.post(f"/v1/cards/{blocked['card_number']}/block", headers=operator)
                assert r.status_code == 200, r.text

                yield World(
                    app=app,
                    client=client,
                    engine=app.state.engine,
                    operator=operator,
                    till=till,
                    values={
                        CARD: card["card_number"],
                        BAD_LUHN: _break_luhn(card["card_number"]),
                        BLOCKED: blocked["card_number"],
                        UNKNOWN_CARD: _unknown_card_number(),
                        CLOSED_PARTNER: closed["id"],
                    },
                )
    finally:
        await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def ledger_snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions) AS transactions,"
                    " (SELECT count(*) FROM entries) AS entries,"
                    " (SELECT count(*) FROM cards) AS cards,"
                    " (SELECT count(*) FROM partners) AS partners,"
                    " (SELECT count(*) FROM accounts) AS accounts"
                )
            )
        ).one()
        balances = (
            await conn.execute(
                text(
                    "SELECT a.id, c.card_number, a.kind, a.asset, a.balance"
                    " FROM accounts a LEFT JOIN cards c ON c.id = a.card_id ORDER BY a.id"
                )
            )
        ).all()
    return {"counts": counts._asdict(), "balances": [tuple(b) for b in balances]}


async def card_balances(engine: AsyncEngine, card_number: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT a.asset, a.balance FROM accounts a JOIN cards c ON c.id = a.card_id"
                " WHERE c.card_number = :n"
            ),
            {"n": card_number},
        )
        return {r.asset: int(r.balance) for r in rows}


# --------------------------------------------------------------------------------------------
# The table

ACCRUALS = "/v1/accruals"
REDEMPTIONS = "/v1/redemptions"
CARDS = "/v1/cards"
PARTNERS = "/v1/partners"
TILL = "till"
OPERATOR = "operator"


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Any = None
    content: bytes | None = None
    stream: bool = False
    auth: str = TILL  # TILL, OPERATOR or "none"
    idempotency_key: str | None = "fresh"  # "fresh", None (no header) or the header's value
    status: int = 422
    code: str = "validation_error"
    pointer: str | None = None
    location: str = "body"


def invalid(case_id: str, path: str, body: Any, pointer: str, **kw: Any) -> Any:
    """A request refused by validation: 422 validation_error naming `pointer`."""
    return pytest.param(Case("POST", path, body, pointer=pointer, **kw), id=case_id)


def refused(case_id: str, path: str, body: Any, status: int, code: str, **kw: Any) -> Any:
    """A well-formed request refused by a rule."""
    return pytest.param(Case("POST", path, body, status=status, code=code, **kw), id=case_id)


def with_fields(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    merged = {**base, **fields}
    return {k: v for k, v in merged.items() if v is not DROP}


def purchase(**fields: Any) -> dict[str, Any]:
    base = {"kind": "purchase", "card_number": CARD, "amount": 10_000, "currency": "EUR"}
    return with_fields({**base, "reference": REF}, **fields)


def award(**fields: Any) -> dict[str, Any]:
    base = {"kind": "award", "card_number": CARD, "points": 10, "reason": "goodwill"}
    return with_fields(base, **fields)


def redemption(**fields: Any) -> dict[str, Any]:
    base = {"card_number": CARD, "asset": "points", "amount": 10, "reference": REF}
    return with_fields(base, **fields)


def card(**fields: Any) -> dict[str, Any]:
    return with_fields({}, **fields)


def partner(**fields: Any) -> dict[str, Any]:
    base = {
        "code": f"p-{uuid.uuid4().hex[:12]}",
        "name": "Bad Input Partner",
        "earn_rate": {"points": 1, "per_amount": 100},
        "cashback_bps": 250,
    }
    return with_fields(base, **fields)


def earn_rate(**fields: Any) -> dict[str, Any]:
    return partner(earn_rate=with_fields({"points": 1, "per_amount": 100}, **fields))


def without(values: dict[str, Any], *labels: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in labels}


_NOW = datetime.now(UTC)

BAD_INTEGERS = {
    "string": "100",
    "float": 10.5,
    "integral_float": 100.0,
    "bool": True,
    "null": None,
    "negative": -1,
    "zero": 0,
    "max_plus_one": MAX_AMOUNT + 1,
    "two_pow_63": 2**63,
    "ten_pow_30": 10**30,
}
BAD_CARD_NUMBERS = {
    "letters": "7000abcd12345678",
    "too_short": "1234567",
    "too_long": "7" + "0" * 19,
    "bad_luhn": BAD_LUHN,
    "json_number": CARD_INT,
    "leading_space": " " + CARD,
    "trailing_newline": CARD + "\n",
    "empty": "",
    "fullwidth_digits": "".join(chr(0xFF10 + int(d)) for d in "7000123456789016"),
}
BAD_REFERENCES = {
    "leading_space": " R-1",
    "trailing_space": "R-1 ",
    "only_spaces": "   ",
    "tab": "R\t1",
    "newline": "R-1\n",
    "nul": "R\x001",
    "del": "R\x7f1",
    "non_ascii": "R-ü1",
    "too_long_65": "R" * 65,
    "empty": "",
    "number": 12345,
}
BAD_OCCURRED_AT = {
    "naive": (_NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat(),
    "naive_minutes": "2026-01-01 10:00",
    "garbage": "yesterday",
    "month_13": "2026-13-01T00:00:00Z",
}
OCCURRED_AT_OUT_OF_RANGE = {
    "one_day_ahead": (_NOW + timedelta(days=1)).isoformat(),
    "ten_minutes_ahead": (_NOW + timedelta(minutes=10)).isoformat(),
    "year_9999": "9999-12-31T23:59:59-14:00",
    "400_days_ago": (_NOW - timedelta(days=400)).isoformat(),
    "year_1": "0001-01-01T00:00:00+14:00",
}


def field_cases(
    prefix: str, path: str, build: Any, fields: dict[str, dict[str, Any]], **kw: Any
) -> list[Any]:
    """One case per (field, bad value): 422 validation_error pointing at the field."""
    return [
        invalid(f"{prefix}-{field}-{label}", path, build(**{field: value}), f"/{field}", **kw)
        for field, values in fields.items()
        for label, value in values.items()
    ]


# The three postings: how to build one, where to send it, and with which key.
POSTINGS = {
    "purchase": (purchase, ACCRUALS, TILL),
    "award": (award, ACCRUALS, OPERATOR),
    "redemption": (redemption, REDEMPTIONS, TILL),
}
# Refusals every posting shares: (fields, Case options, status, code).
POSTING_REFUSALS: dict[str, tuple[dict[str, Any], dict[str, Any], int, str]] = {
    "unknown-card": ({"card_number": UNKNOWN_CARD}, {}, 404, "card_not_found"),
    "blocked-card": ({"card_number": BLOCKED}, {}, 409, "card_blocked"),
    "no-idempotency-key": ({}, {"idempotency_key": None}, 400, "idempotency_key_required"),
    "no-api-key": ({}, {"auth": "none"}, 401, "unauthorized"),
    **{
        f"occurred_at-{label}": ({"occurred_at": value}, {}, 422, "occurred_at_out_of_range")
        for label, value in OCCURRED_AT_OUT_OF_RANGE.items()
    },
}
POSTING_CASES = [
    refused(f"{name}-{label}", path, build(**fields), status, code, **{"auth": auth, **kw})
    for name, (build, path, auth) in POSTINGS.items()
    for label, (fields, kw, status, code) in POSTING_REFUSALS.items()
] + [
    invalid(
        f"{name}-idempotency-key-{label}",
        path,
        build(),
        "/Idempotency-Key",
        auth=auth,
        idempotency_key=value,
        location="header",
    )
    for name, (build, path, auth) in POSTINGS.items()
    for label, value in {"empty": "", "with_space": "two words", "too_long": "k" * 256}.items()
]

PURCHASE_CASES = [
    *field_cases(
        "purchase",
        ACCRUALS,
        purchase,
        {
            "amount": BAD_INTEGERS,
            "card_number": BAD_CARD_NUMBERS,
            "reference": BAD_REFERENCES,
            "occurred_at": BAD_OCCURRED_AT,
            "currency": {"lowercase": "eur", "four_letters": "EURO", "numeric": 978, "null": None},
            "partner_id": {"not_uuid": "partner-1", "number": 1},
        },
    ),
    invalid("purchase-unknown-field", ACCRUALS, purchase(bogus=1), "/bogus"),
    invalid("purchase-award-field", ACCRUALS, purchase(reason="why"), "/reason"),
    invalid("purchase-missing-amount", ACCRUALS, purchase(amount=DROP), "/amount"),
    invalid("purchase-missing-reference", ACCRUALS, purchase(reference=DROP), "/reference"),
    refused("purchase-in-usd", ACCRUALS, purchase(currency="USD"), 422, "currency_mismatch"),
    refused(
        "purchase-dup-ref", ACCRUALS, purchase(reference=EXISTING_REF), 409, "duplicate_reference"
    ),
    refused(
        "purchase-as-other-partner", ACCRUALS, purchase(partner_id=CLOSED_PARTNER), 403, "forbidden"
    ),
    refused("purchase-op-no-partner", ACCRUALS, purchase(), 422, "partner_required", auth=OPERATOR),
    refused(
        "purchase-op-unknown-partner",
        ACCRUALS,
        purchase(partner_id=str(uuid.uuid4())),
        404,
        "partner_not_found",
        auth=OPERATOR,
    ),
    refused(
        "purchase-op-partner-cannot-earn",
        ACCRUALS,
        purchase(partner_id=CLOSED_PARTNER),
        409,
        "partner_cannot_earn",
        auth=OPERATOR,
    ),
]

AWARD_CASES = [
    *field_cases(
        "award",
        ACCRUALS,
        award,
        {
            "points": BAD_INTEGERS,
            "card_number": BAD_CARD_NUMBERS,
            "reference": BAD_REFERENCES,
            "occurred_at": BAD_OCCURRED_AT,
            "reason": {"empty": "", "too_long": "x" * 501, "null": None},
        },
        auth=OPERATOR,
    ),
    invalid("award-purchase-field", ACCRUALS, award(amount=10), "/amount", auth=OPERATOR),
    invalid("award-missing-reason", ACCRUALS, award(reason=DROP), "/reason", auth=OPERATOR),
    refused("award-by-till", ACCRUALS, award(), 403, "forbidden"),
]

REDEMPTION_CASES = [
    *field_cases(
        "redemption",
        REDEMPTIONS,
        redemption,
        {
            "amount": BAD_INTEGERS,
            "card_number": BAD_CARD_NUMBERS,
            "reference": BAD_REFERENCES,
            "occurred_at": BAD_OCCURRED_AT,
            "asset": {"unknown": "miles", "uppercase": "POINTS", "null": None},
            "partner_id": {"not_uuid": "partner-1"},
        },
    ),
    invalid("redemption-unknown-field", REDEMPTIONS, redemption(currency="EUR"), "/currency"),
    invalid("redemption-missing-reference", REDEMPTIONS, redemption(reference=DROP), "/reference"),
    refused(
        "redemption-dup-ref",
        REDEMPTIONS,
        redemption(reference=SPENT_REF),
        409,
        "duplicate_reference",
    ),
    refused(
        "redemption-more-points-than-held",
        REDEMPTIONS,
        redemption(amount=MAX_AMOUNT),
        422,
        "insufficient_balance",
    ),
    refused(
        "redemption-more-cashback-than-held",
        REDEMPTIONS,
        redemption(asset="cashback", amount=501),
        422,
        "insufficient_balance",
    ),
    refused(
        "redemption-op-unknown-partner",
        REDEMPTIONS,
        redemption(partner_id=str(uuid.uuid4())),
        404,
        "partner_not_found",
        auth=OPERATOR,
    ),
    refused(
        "redemption-op-partner-cannot-redeem",
        REDEMPTIONS,
        redemption(partner_id=CLOSED_PARTNER),
        409,
        "partner_cannot_redeem",
        auth=OPERATOR,
    ),
    refused(
        "redemption-op-blocked-card",
        REDEMPTIONS,
        redemption(card_number=BLOCKED),
        409,
        "card_blocked",
        auth=OPERATOR,
    ),
]

CARD_CASES = [
    *field_cases(
        "card",
        CARDS,
        card,
        {
            "card_number": BAD_CARD_NUMBERS,
            "kind": {"unknown": "gold", "number": 1, "null": None},
            "customer_reference": {"empty": "", "too_long": "c" * 101, "number": 42},
        },
        auth=OPERATOR,
    ),
    invalid("card-unknown-field", CARDS, card(points=100), "/points", auth=OPERATOR),
    refused(
        "card-personalized-without-customer",
        CARDS,
        card(kind="personalized"),
        422,
        "customer_reference_mismatch",
        auth=OPERATOR,
    ),
    refused(
        "card-bearer-with-customer",
        CARDS,
        card(customer_reference="cust-1"),
        422,
        "customer_reference_mismatch",
        auth=OPERATOR,
    ),
    refused(
        "card-number-taken", CARDS, card(card_number=CARD), 409, "card_number_taken", auth=OPERATOR
    ),
    refused("card-number-chosen-by-till", CARDS, card(card_number=UNKNOWN_CARD), 403, "forbidden"),
    refused("card-no-api-key", CARDS, card(), 401, "unauthorized", auth="none"),
]

PARTNER_CASES = [
    *field_cases(
        "partner",
        PARTNERS,
        partner,
        {
            # Zero cashback is allowed.
            "cashback_bps": {**without(BAD_INTEGERS, "zero"), "over_100_percent": 10_001},
            "code": {"uppercase": "Shop", "space": "my shop", "empty": "", "too_long": "p" * 65},
            "name": {"empty": "", "too_long": "n" * 201, "null": None},
            "can_earn": {"string": "yes", "number": 1, "null": None},
            "earn_rate": {"number": 1, "string": "1/100", "null": None},
        },
        auth=OPERATOR,
    ),
    *[
        invalid(
            f"partner-earn_rate-{field}-{label}",
            PARTNERS,
            rate,
            f"/earn_rate/{field}",
            auth=OPERATOR,
        )
        for field, values in {
            # Zero points per amount is allowed (a cashback-only partner).
            "points": {**without(BAD_INTEGERS, "zero"), "over_max": 1_000_001},
            "per_amount": BAD_INTEGERS,
            "bonus": {"unknown_field": 5},
        }.items()
        for label, value in values.items()
        for rate in [earn_rate(**{field: value})]
    ],
    invalid("partner-unknown-field", PARTNERS, partner(currency="EUR"), "/currency", auth=OPERATOR),
    invalid(
        "partner-missing-earn_rate", PARTNERS, partner(earn_rate=DROP), "/earn_rate", auth=OPERATOR
    ),
    refused("partner-by-till", PARTNERS, partner(), 403, "forbidden"),
    refused("partner-no-api-key", PARTNERS, partner(), 401, "unauthorized", auth="none"),
]

GET_CARD_CASES = [
    *[
        pytest.param(
            Case(
                "GET", f"/v1/cards/{number}", auth=OPERATOR, pointer="/card_number", location="path"
            ),
            id=f"get-card-{label}",
        )
        for label, number in {
            "letters": "7000abcd12345678",
            "too_short": "1234567",
            "too_long": "7" + "0" * 19,
            "bad_luhn": BAD_LUHN,
            "encoded_newline": CARD + "%0A",
            "encoded_space": "%20" + CARD,
            "negative": "-" + CARD,
        }.items()
    ],
    *[
        pytest.param(
            Case("GET", f"/v1/cards/{UNKNOWN_CARD}", auth=auth, status=404, code="card_not_found"),
            id=f"get-card-unknown-by-{auth}",
        )
        for auth in (OPERATOR, TILL)
    ],
]

POST_ENDPOINTS = {
    "accrual": (ACCRUALS, TILL),
    "redemption": (REDEMPTIONS, TILL),
    "card": (CARDS, OPERATOR),
    "partner": (PARTNERS, OPERATOR),
}
# Bodies that are not JSON at all.
MALFORMED = {
    "truncated": b'{"card_number": ',
    "trailing_garbage": b'{"reference": "R-1"} x',
    "single_quotes": b"{'reference': 'R-1'}",
    "unquoted_key": b"{reference: 1}",
}
# Bodies the JSON parser cannot read for other reasons: just as malformed to a client.
UNREADABLE = {
    "invalid_utf8_in_string": b'{"reference": "R-\xff"}',
    "nested_30000_deep": b"[" * 30_000,
    "integer_with_5000_digits": b'{"amount": ' + b"9" * 5_000 + b"}",
}


def _padded(size: int, card_number: str = "0") -> bytes:
    """A well-formed JSON award body of exactly `size` bytes (whitespace padding)."""
    head = b'{"kind": "award", "card_number": "%s", "points": 1, "reason": "r"' % (
        card_number.encode()
    )
    return head + b" " * (size - len(head) - 1) + b"}"


async def _chunks(content: bytes, size: int = 8 * 1024) -> AsyncIterator[bytes]:
    """The body as a stream of chunks: no Content-Length, sent chunked."""
    for start in range(0, len(content), size):
        yield content[start : start + size]


MALFORMED_CASES = [
    refused(f"malformed-{name}-{label}", path, None, 400, "malformed_json", content=raw, auth=auth)
    for name, (path, auth) in POST_ENDPOINTS.items()
    for label, raw in MALFORMED.items()
] + [
    # One endpoint suffices: the body is parsed before any route code runs.
    refused(f"malformed-redemption-{label}", REDEMPTIONS, None, 400, "malformed_json", content=raw)
    for label, raw in UNREADABLE.items()
]

OVERSIZED_CASES = [
    refused(
        f"oversized-{name}-{'chunked' if stream else 'content-length'}",
        path,
        None,
        413,
        "payload_too_large",
        content=_padded(MAX_BODY + 10 * 1024),
        stream=stream,
        auth=auth,
    )
    for name, (path, auth) in POST_ENDPOINTS.items()
    for stream in (False, True)
]


# --------------------------------------------------------------------------------------------
# The tests


def resolve(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value == CARD_INT:
            return int(values[CARD])
        for token, replacement in values.items():
            value = value.replace(token, replacement)
        return value
    if isinstance(value, dict):
        return {k: resolve(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, values) for v in value]
    return value


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert problem["type"] == "/problems/" + code.replace("_", "-")
    assert problem["title"]
    assert problem["detail"]
    return problem


ALL_CASES = [
    *POSTING_CASES,
    *PURCHASE_CASES,
    *AWARD_CASES,
    *REDEMPTION_CASES,
    *CARD_CASES,
    *PARTNER_CASES,
    *GET_CARD_CASES,
    *MALFORMED_CASES,
    *OVERSIZED_CASES,
]


async def send_and_check(world: World, bad: Case) -> dict[str, Any]:
    """Send the case's request; assert the problem and that the ledger did not change."""
    values = {**world.values, REF: f"R-{uuid.uuid4().hex[:12]}"}
    headers: dict[str, str] = {}
    if bad.auth == TILL:
        headers.update(world.till)
    elif bad.auth == OPERATOR:
        headers.update(world.operator)
    if bad.idempotency_key == "fresh":
        headers.update(idem())
    elif bad.idempotency_key is not None:
        headers["Idempotency-Key"] = bad.idempotency_key
    path = resolve(bad.path, values)
    request: dict[str, Any] = {"headers": headers}
    if bad.content is not None:
        headers["Content-Type"] = "application/json"
        request["content"] = _chunks(bad.content) if bad.stream else bad.content
    elif bad.method != "GET":
        request["json"] = resolve(bad.body, values)

    before = await ledger_snapshot(world.engine)
    card_before = await card_balances(world.engine, values[CARD])
    response = await world.client.request(bad.method, path, **request)
    if bad.stream:
        assert "content-length" not in response.request.headers

    problem = assert_problem(response, bad.status, bad.code)
    assert await ledger_snapshot(world.engine) == before
    assert await card_balances(world.engine, values[CARD]) == card_before
    if bad.code == "validation_error":
        assert bad.pointer is not None
        assert problem["errors"], problem
        for error in problem["errors"]:
            assert error["message"]
            assert error["type"]
    return problem


@pytest.mark.parametrize("bad", ALL_CASES)
async def test_bad_request_is_refused_and_moves_nothing(world: World, bad: Case) -> None:
    problem = await send_and_check(world, bad)
    if bad.code == "validation_error":
        # The error names the offending field. (That the pointer is exactly the field's JSON
        # pointer in the request is checked for every endpoint but accruals here, and for
        # accruals in test_accrual_error_pointer_is_a_json_pointer_into_the_body.)
        assert {e["location"] for e in problem["errors"]} == {bad.location}, problem
        for error in problem["errors"]:
            assert error["pointer"].endswith(str(bad.pointer)), problem["errors"]
            if bad.path != ACCRUALS:
                assert error["pointer"] == bad.pointer, problem["errors"]


@pytest.mark.parametrize(
    "bad",
    [
        invalid("purchase-amount", ACCRUALS, purchase(amount="100"), "/amount"),
        invalid("purchase-unknown-field", ACCRUALS, purchase(bogus=1), "/bogus"),
        invalid("purchase-bad-luhn", ACCRUALS, purchase(card_number=BAD_LUHN), "/card_number"),
        invalid("award-points", ACCRUALS, award(points=0), "/points", auth=OPERATOR),
        invalid("missing-kind", ACCRUALS, purchase(kind=DROP), "/kind"),
        invalid("unknown-kind", ACCRUALS, purchase(kind="refund"), "/kind"),
        # The same mistake on a plain model, for contrast: already right.
        invalid("redemption-amount", REDEMPTIONS, redemption(amount="100"), "/amount"),
    ],
)
async def test_accrual_error_pointer_is_a_json_pointer_into_the_body(
    world: World, bad: Case
) -> None:
    """`pointer` locates the field in the JSON the client sent (RFC 6901): `/amount`, not
    `/purchase/amount` (the accrual union's tag is not part of the body), and a missing or
    unknown `kind` is `/kind`, not `/`."""
    problem = await send_and_check(world, bad)
    assert [(e["location"], e["pointer"]) for e in problem["errors"]] == [
        (bad.location, bad.pointer)
    ], problem["errors"]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("size", "status", "code"),
    [
        pytest.param(MAX_BODY, 404, "card_not_found", id="at-limit-is-read"),
        pytest.param(MAX_BODY + 1, 413, "payload_too_large", id="one-byte-over"),
    ],
)
async def test_body_size_limit_is_exact(
    world: World, size: int, status: int, code: str, streamed: bool
) -> None:
    """A body of exactly max_body_bytes is read (and refused for its content: the card is
    unknown); one byte more is refused for its size."""
    content = _padded(size, world.values[UNKNOWN_CARD])
    assert len(content) == size
    before = await ledger_snapshot(world.engine)

    response = await world.client.post(
        "/v1/accruals",
        content=_chunks(content) if streamed else content,
        headers={**world.operator, **idem(), "Content-Type": "application/json"},
    )

    assert_problem(response, status, code)
    assert await ledger_snapshot(world.engine) == before


async def test_balance_overflow_is_refused_and_moves_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Every amount is in range, but the card's balance would pass bigint's maximum: a
    422 amount_out_of_range, not a 500, and nothing written."""
    _, till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1_000_000, "per_amount": 1}, cashback_bps=0
    )
    card = await issue_card(client, operator)
    purchase_body = {
        "kind": "purchase",
        "card_number": card["card_number"],
        "amount": MAX_AMOUNT,  # earns 10**18 points
        "currency": "EUR",
    }
    for i in range(9):
        r = await client.post(
            "/v1/accruals",
            json={**purchase_body, "reference": f"R-{i}"},
            headers={**till, **idem()},
        )
        assert r.status_code == 201, r.text
    assert await card_balances(engine, card["card_number"]) == {
        "points": 9 * 10**18,
        "cashback": 0,
    }
    before = await ledger_snapshot(engine)

    response = await client.post(
        "/v1/accruals",
        json={**purchase_body, "reference": "R-9"},
        headers={**till, **idem()},
    )

    assert_problem(response, 422, "amount_out_of_range")
    assert await ledger_snapshot(engine) == before
