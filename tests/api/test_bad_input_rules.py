"""Bad input to the earning rules: PUT /v1/partners/{id}/earn-rule, PUT /v1/tiers, and the
purchase fields `lines` and `redeemed_amount` of POST /v1/accruals (through the hot route and
FastAPI's own, which must answer alike). Each is a problem+json answer with a stable code (and
a JSON pointer to the field at fault), and nothing is written: no rule version, no ladder
version, no posting, no qualifying spend, no Idempotency-Key."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"
MAX_AMOUNT = 10**12

_WRITTEN = text("""
    SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries),
           (SELECT count(*) FROM earnings), (SELECT count(*) FROM idempotency_keys),
           (SELECT count(*) FROM earn_rules), (SELECT count(*) FROM tier_ladders),
           (SELECT coalesce(sum(amount), 0) FROM card_spend),
           (SELECT count(*) FROM card_spend),
           (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'card'),
           (SELECT array_agg(id || ':' || earn_rule_version || ':' || earn_points || ':'
                             || earn_per_amount || ':' || cashback_bps || ':'
                             || excluded_categories::text || ':' || excluded_skus::text
                             ORDER BY id) FROM partners),
           (SELECT array_agg(card_number || ':' || coalesce(tier, '-') ORDER BY id) FROM cards)
""")


async def _written(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        return tuple((await conn.execute(_WRITTEN)).one())


def _assert_problem(response: Response, status: int, code: str, pointer: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    if pointer is not None:
        assert [e["pointer"] for e in body["errors"]] == [pointer], body


async def _check_all(
    engine: AsyncEngine, cases: list[tuple[str, Any, int, str, str | None]], send: Any
) -> None:
    """Send each case; check its answer and that nothing was written."""
    before = await _written(engine)
    for name, body, status, code, pointer in cases:
        response = await send(body)
        try:
            _assert_problem(response, status, code, pointer)
            assert await _written(engine) == before
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


def _bad(name: str, body: Any, pointer: str | None) -> tuple[str, Any, int, str, str | None]:
    return (name, body, 422, "validation_error", pointer)


# PUT /v1/partners/{id}/earn-rule --------------------------------------------------------------

RATE = {"points": 1, "per_amount": 100}
RULE: dict[str, Any] = {"earn_rate": RATE}


def _rule(**changes: Any) -> dict[str, Any]:
    return {**RULE, **changes}


def _rate(**changes: Any) -> dict[str, Any]:
    return {"earn_rate": {**RATE, **changes}}


EARN_RULE_CASES: list[tuple[str, Any, int, str, str | None]] = [
    _bad("unknown-field", _rule(colour="red"), "/colour"),
    _bad("empty-object", {}, "/earn_rate"),
    _bad("null-rate", {"earn_rate": None}, "/earn_rate"),
    _bad("string-rate", {"earn_rate": "1 per 100"}, "/earn_rate"),
    _bad("list-rate", {"earn_rate": [1, 100]}, "/earn_rate"),
    _bad("rate-unknown-field", _rate(currency="EUR"), "/earn_rate/currency"),
    _bad("missing-points", {"earn_rate": {"per_amount": 100}}, "/earn_rate/points"),
    _bad("negative-points", _rate(points=-1), "/earn_rate/points"),
    _bad("points-over-max", _rate(points=1_000_001), "/earn_rate/points"),
    _bad("string-points", _rate(points="1"), "/earn_rate/points"),
    _bad("float-points", _rate(points=1.0), "/earn_rate/points"),
    _bad("bool-points", _rate(points=True), "/earn_rate/points"),
    _bad("missing-per-amount", {"earn_rate": {"points": 1}}, "/earn_rate/per_amount"),
    _bad("zero-per-amount", _rate(per_amount=0), "/earn_rate/per_amount"),
    _bad("negative-per-amount", _rate(per_amount=-100), "/earn_rate/per_amount"),
    _bad("per-amount-over-max", _rate(per_amount=10**12 + 1), "/earn_rate/per_amount"),
    _bad("huge-per-amount", _rate(per_amount=10**40), "/earn_rate/per_amount"),
    _bad("negative-bps", _rule(cashback_bps=-1), "/cashback_bps"),
    _bad("bps-over-100-percent", _rule(cashback_bps=10_001), "/cashback_bps"),
    _bad("string-bps", _rule(cashback_bps="500"), "/cashback_bps"),
    _bad("float-bps", _rule(cashback_bps=2.5), "/cashback_bps"),
    _bad("bool-bps", _rule(cashback_bps=False), "/cashback_bps"),
    _bad("null-bps", _rule(cashback_bps=None), "/cashback_bps"),
    _bad("string-categories", _rule(excluded_categories="tobacco"), "/excluded_categories"),
    _bad("null-categories", _rule(excluded_categories=None), "/excluded_categories"),
    _bad("object-categories", _rule(excluded_categories={"a": 1}), "/excluded_categories"),
    _bad("empty-category", _rule(excluded_categories=["ok", ""]), "/excluded_categories/1"),
    _bad("long-category", _rule(excluded_categories=["c" * 65]), "/excluded_categories/0"),
    _bad("number-category", _rule(excluded_categories=[5]), "/excluded_categories/0"),
    _bad("null-category", _rule(excluded_categories=[None]), "/excluded_categories/0"),
    _bad(
        "too-many-categories",
        _rule(excluded_categories=[f"c{i}" for i in range(1_001)]),
        "/excluded_categories",
    ),
    _bad("string-skus", _rule(excluded_skus="LOTTO"), "/excluded_skus"),
    _bad("empty-sku", _rule(excluded_skus=[""]), "/excluded_skus/0"),
    _bad("long-sku", _rule(excluded_skus=["s" * 65]), "/excluded_skus/0"),
    _bad("list-sku", _rule(excluded_skus=[["LOTTO"]]), "/excluded_skus/0"),
    _bad("too-many-skus", _rule(excluded_skus=[f"s{i}" for i in range(1_001)]), "/excluded_skus"),
    _bad("array-body", [RULE], None),
    _bad("string-body", "1 per 100", None),
    ("oversized-body", _rule(excluded_skus=["s" * 64] * 1_000), 413, "payload_too_large", None),
]


async def test_bad_earn_rule_bodies_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, _ = await partner_with_key(app, client, operator)
    path = f"/v1/partners/{partner['id']}/earn-rule"

    async def send(body: Any) -> Response:
        return await client.put(path, json=body, headers=operator)

    await _check_all(engine, EARN_RULE_CASES, send)
    # At the limits: accepted.
    r = await send(
        {
            "earn_rate": {"points": 1_000_000, "per_amount": 10**12},
            "cashback_bps": 10_000,
            "excluded_categories": [f"c{i}" for i in range(1_000)],
            "excluded_skus": ["s" * 64],
        }
    )
    assert r.status_code == 200, r.text
    assert r.json()["earn_rule_version"] == 2


async def test_earn_rule_requests_wrong_outside_the_body_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    path = f"/v1/partners/{partner['id']}/earn-rule"
    cases: list[tuple[str, Any, int, str, str | None]] = [
        (
            "non-uuid-id",
            lambda: client.put("/v1/partners/not-a-uuid/earn-rule", json=RULE, headers=operator),
            422,
            "validation_error",
            "/partner_id",
        ),
        (
            "unknown-id",
            lambda: client.put(
                f"/v1/partners/{uuid.uuid4()}/earn-rule", json=RULE, headers=operator
            ),
            404,
            "partner_not_found",
            None,
        ),
        (
            "partner-key",
            lambda: client.put(path, json=RULE, headers=till),
            403,
            "forbidden",
            None,
        ),
        ("no-credentials", lambda: client.put(path, json=RULE), 401, "unauthorized", None),
        (
            "wrong-scheme",
            lambda: client.put(
                path,
                json=RULE,
                headers={"Authorization": operator["Authorization"].replace("Bearer", "Basic")},
            ),
            401,
            "unauthorized",
            None,
        ),
        (
            "malformed-json",
            lambda: client.put(
                path,
                content=b'{"earn_rate": {"points": 1',
                headers={**operator, "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
            None,
        ),
        ("no-body", lambda: client.put(path, headers=operator), 422, "validation_error", None),
        (
            "post-instead-of-put",
            lambda: client.post(path, json=RULE, headers=operator),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "history-of-non-uuid",
            lambda: client.get("/v1/partners/x/earn-rules", headers=operator),
            422,
            "validation_error",
            "/partner_id",
        ),
    ]
    before = await _written(engine)
    for name, request, status, code, pointer in cases:
        response = await request()
        try:
            _assert_problem(response, status, code, pointer)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    assert await _written(engine) == before


# PUT /v1/tiers -------------------------------------------------------------------------------

BRONZE = {"code": "bronze", "name": "Bronze", "threshold": 0}
SILVER = {"code": "silver", "name": "Silver", "threshold": 10_000, "points_bonus_pct": 50}


def _ladder(*tiers: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"tiers": list(tiers), **top}


def _silver(**changes: Any) -> dict[str, Any]:
    """A ladder whose second tier carries `changes`."""
    return _ladder(BRONZE, {**SILVER, **changes})


def _without(tier: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in tier.items() if k != key}


TIER_CASES: list[tuple[str, Any, int, str, str | None]] = [
    _bad("empty-object", {}, "/tiers"),
    _bad("unknown-field", _ladder(BRONZE, colour="red"), "/colour"),
    _bad("null-tiers", {"tiers": None}, "/tiers"),
    _bad("object-tiers", {"tiers": BRONZE}, "/tiers"),
    _bad("no-tiers", _ladder(), "/tiers"),
    _bad(
        "21-tiers",
        _ladder(*[{"code": f"t{i}", "name": "T", "threshold": i} for i in range(21)]),
        "/tiers",
    ),
    _bad("tier-not-object", {"tiers": ["gold"]}, "/tiers/0"),
    _bad("null-tier", {"tiers": [BRONZE, None]}, "/tiers/1"),
    # The ladder's shape: the first threshold 0, strictly increasing, unique codes.
    _bad("first-threshold-not-0", _ladder({**BRONZE, "threshold": 1}), "/"),
    _bad("equal-thresholds", _silver(threshold=0), "/"),
    _bad(
        "decreasing-thresholds",
        _ladder(BRONZE, SILVER, {"code": "gold", "name": "Gold", "threshold": 9_999}),
        "/",
    ),
    _bad("duplicate-codes", _silver(code="bronze"), "/"),
    # A tier's fields.
    _bad("missing-code", _ladder(BRONZE, _without(SILVER, "code")), "/tiers/1/code"),
    _bad("uppercase-code", _silver(code="Silver"), "/tiers/1/code"),
    _bad("leading-dash-code", _silver(code="-silver"), "/tiers/1/code"),
    _bad("leading-underscore-code", _silver(code="_silver"), "/tiers/1/code"),
    _bad("spaced-code", _silver(code="silver plus"), "/tiers/1/code"),
    _bad("empty-code", _silver(code=""), "/tiers/1/code"),
    _bad("long-code", _silver(code="s" * 33), "/tiers/1/code"),
    _bad("non-ascii-code", _silver(code="sílver"), "/tiers/1/code"),
    _bad("number-code", _silver(code=2), "/tiers/1/code"),
    _bad("missing-name", _ladder(BRONZE, _without(SILVER, "name")), "/tiers/1/name"),
    _bad("empty-name", _silver(name=""), "/tiers/1/name"),
    _bad("long-name", _silver(name="n" * 101), "/tiers/1/name"),
    _bad("number-name", _silver(name=7), "/tiers/1/name"),
    _bad("missing-threshold", _ladder(BRONZE, _without(SILVER, "threshold")), "/tiers/1/threshold"),
    _bad("negative-threshold", _silver(threshold=-1), "/tiers/1/threshold"),
    _bad("threshold-over-max", _silver(threshold=MAX_AMOUNT + 1), "/tiers/1/threshold"),
    _bad("string-threshold", _silver(threshold="10000"), "/tiers/1/threshold"),
    _bad("float-threshold", _silver(threshold=10_000.0), "/tiers/1/threshold"),
    _bad("bool-threshold", _ladder({**BRONZE, "threshold": False}), "/tiers/0/threshold"),
    _bad("null-threshold", _silver(threshold=None), "/tiers/1/threshold"),
    _bad("negative-pct", _silver(points_bonus_pct=-1), "/tiers/1/points_bonus_pct"),
    _bad("pct-over-max", _silver(points_bonus_pct=1_001), "/tiers/1/points_bonus_pct"),
    _bad("string-pct", _silver(points_bonus_pct="50"), "/tiers/1/points_bonus_pct"),
    _bad("float-pct", _silver(points_bonus_pct=50.5), "/tiers/1/points_bonus_pct"),
    _bad("bool-pct", _silver(points_bonus_pct=True), "/tiers/1/points_bonus_pct"),
    _bad("negative-bps", _silver(cashback_bonus_bps=-1), "/tiers/1/cashback_bonus_bps"),
    _bad("bps-over-max", _silver(cashback_bonus_bps=10_001), "/tiers/1/cashback_bonus_bps"),
    _bad("string-bps", _silver(cashback_bonus_bps="100"), "/tiers/1/cashback_bonus_bps"),
    _bad("tier-unknown-field", _silver(multiplier=2), "/tiers/1/multiplier"),
    # The window.
    _bad("zero-window", _ladder(BRONZE, window_months=0), "/window_months"),
    _bad("negative-window", _ladder(BRONZE, window_months=-12), "/window_months"),
    _bad("window-over-max", _ladder(BRONZE, window_months=61), "/window_months"),
    _bad("string-window", _ladder(BRONZE, window_months="12"), "/window_months"),
    _bad("float-window", _ladder(BRONZE, window_months=12.0), "/window_months"),
    _bad("bool-window", _ladder(BRONZE, window_months=True), "/window_months"),
    _bad("null-window", _ladder(BRONZE, window_months=None), "/window_months"),
    _bad("array-body", [BRONZE], None),
    _bad("string-body", "tiers", None),
    (
        "oversized-body",
        _silver(name="n" * 100) | {"x": "y" * 70_000},
        413,
        "payload_too_large",
        None,
    ),
]


async def test_bad_ladders_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    r = await client.put("/v1/tiers", json=_ladder(BRONZE, SILVER), headers=operator)
    assert r.status_code == 200, r.text
    current = r.json()

    async def send(body: Any) -> Response:
        return await client.put("/v1/tiers", json=body, headers=operator)

    await _check_all(engine, TIER_CASES, send)
    r = await client.get("/v1/tiers", headers=operator)
    assert r.json() == current
    # At the limits: accepted.
    tiers = [
        {
            "code": f"t{i}" if i else "a" * 32,
            "name": "n" * 100,
            "threshold": MAX_AMOUNT - 19 + i if i else 0,
            "points_bonus_pct": 1_000,
            "cashback_bonus_bps": 10_000,
        }
        for i in range(20)
    ]
    r = await send({"tiers": tiers, "window_months": 60})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    r = await send({"tiers": [{**BRONZE, "code": "0"}], "window_months": 1})
    assert r.status_code == 200, r.text


async def test_ladder_requests_wrong_outside_the_body_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    body = _ladder(BRONZE, SILVER)
    cases: list[tuple[str, Any, int, str]] = [
        ("partner-key", lambda: client.put("/v1/tiers", json=body, headers=till), 403, "forbidden"),
        ("partner-key-get", lambda: client.get("/v1/tiers", headers=till), 403, "forbidden"),
        ("no-credentials", lambda: client.put("/v1/tiers", json=body), 401, "unauthorized"),
        (
            "malformed-json",
            lambda: client.put(
                "/v1/tiers",
                content=b'{"tiers": [',
                headers={**operator, "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
        ),
        ("no-body", lambda: client.put("/v1/tiers", headers=operator), 422, "validation_error"),
        (
            "no-ladder-yet",
            lambda: client.get("/v1/tiers", headers=operator),
            404,
            "no_tier_ladder",
        ),
    ]
    before = await _written(engine)
    for name, request, status, code in cases:
        response = await request()
        try:
            _assert_problem(response, status, code, None)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    assert await _written(engine) == before


# POST /v1/accruals: lines and redeemed_amount ------------------------------------------------

LINE = {"sku": "MILK", "category": "food", "amount": 1_000}


def _lines(*lines: Any, amount: int = 1_000, **extra: Any) -> dict[str, Any]:
    return {"amount": amount, "lines": list(lines), **extra}


def _line(**changes: Any) -> dict[str, Any]:
    """A basket of one line carrying `changes` (the amount kept at 1_000)."""
    return _lines({**LINE, **changes})


PURCHASE_CASES: list[tuple[str, Any, int, str, str | None]] = [
    _bad("empty-lines", _lines(), "/lines"),
    _bad("string-lines", {"amount": 1_000, "lines": "MILK"}, "/lines"),
    _bad("object-lines", {"amount": 1_000, "lines": LINE}, "/lines"),
    _bad("501-lines", _lines(*[{"sku": "s", "amount": 2}] * 501, amount=1_002), "/lines"),
    _bad("lines-short-of-amount", _lines(LINE, amount=1_001), "/"),
    _bad("lines-over-amount", _lines(LINE, LINE, amount=1_999), "/"),
    _bad(
        "lines-over-max-in-total",
        _lines(*[{"sku": "s", "amount": MAX_AMOUNT}] * 2, amount=MAX_AMOUNT),
        "/",
    ),
    _bad("line-not-object", _lines("MILK"), "/lines/0"),
    _bad("null-line", _lines(LINE, None), "/lines/1"),
    _bad("line-unknown-field", _line(price=1_000), "/lines/0/price"),
    _bad("missing-sku", _lines({"amount": 1_000}), "/lines/0/sku"),
    _bad("empty-sku", _line(sku=""), "/lines/0/sku"),
    _bad("long-sku", _line(sku="s" * 65), "/lines/0/sku"),
    _bad("number-sku", _line(sku=12345), "/lines/0/sku"),
    _bad("null-sku", _line(sku=None), "/lines/0/sku"),
    _bad("empty-category", _line(category=""), "/lines/0/category"),
    _bad("long-category", _line(category="c" * 65), "/lines/0/category"),
    _bad("list-category", _line(category=["food"]), "/lines/0/category"),
    _bad("missing-line-amount", _lines({"sku": "MILK"}), "/lines/0/amount"),
    _bad("negative-line-amount", _lines(LINE, {"sku": "X", "amount": -1}), "/lines/1/amount"),
    _bad("line-amount-over-max", _line(amount=MAX_AMOUNT + 1), "/lines/0/amount"),
    _bad("string-line-amount", _line(amount="1000"), "/lines/0/amount"),
    _bad("float-line-amount", _line(amount=1_000.0), "/lines/0/amount"),
    _bad("bool-line-amount", _lines({**LINE, "amount": True}, amount=1), "/lines/0/amount"),
    _bad("null-line-amount", _line(amount=None), "/lines/0/amount"),
    _bad("redeemed-over-amount", {"amount": 1_000, "redeemed_amount": 1_001}, "/"),
    _bad("redeemed-over-amount-with-lines", _lines(LINE, redeemed_amount=1_001), "/"),
    _bad("negative-redeemed", {"amount": 1_000, "redeemed_amount": -1}, "/redeemed_amount"),
    _bad(
        "redeemed-over-max",
        {"amount": MAX_AMOUNT, "redeemed_amount": MAX_AMOUNT + 1},
        "/redeemed_amount",
    ),
    _bad("string-redeemed", {"amount": 1_000, "redeemed_amount": "10"}, "/redeemed_amount"),
    _bad("float-redeemed", {"amount": 1_000, "redeemed_amount": 10.0}, "/redeemed_amount"),
    _bad("bool-redeemed", {"amount": 1_000, "redeemed_amount": True}, "/redeemed_amount"),
    _bad("null-redeemed", {"amount": 1_000, "redeemed_amount": None}, "/redeemed_amount"),
    (
        "oversized-basket",
        _lines(*[{"sku": "s" * 64, "category": "c" * 64, "amount": 2}] * 500, amount=1_000),
        413,
        "payload_too_large",
        None,
    ),
]


@pytest.fixture
async def plain_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    """The app without the hot routes: FastAPI's own POST /v1/accruals."""
    plain = create_app(settings, hot_routes=False)
    async with plain.router.lifespan_context(plain):
        transport = ASGITransport(app=plain)
        async with AsyncClient(transport=transport, base_url="http://ledger.test") as c:
            yield c


@pytest.mark.parametrize("route", ["hot", "fastapi"])
async def test_bad_purchase_baskets_are_refused_and_write_nothing(
    app: FastAPI,
    client: AsyncClient,
    plain_client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    route: str,
) -> None:
    """Against a program with a ladder and a partner with exclusions (so a purchase that got
    through would write earnings, spend and a tier)."""
    r = await client.put("/v1/tiers", json=_ladder(BRONZE, SILVER), headers=operator)
    assert r.status_code == 200, r.text
    _, till = await partner_with_key(
        app, client, operator, excluded_categories=["tobacco"], excluded_skus=["LOTTO"]
    )
    card = (await issue_card(client, operator))["card_number"]
    target = client if route == "hot" else plain_client

    async def send(body: Any) -> Response:
        full = {
            "kind": "purchase",
            "card_number": card,
            "currency": "EUR",
            "reference": f"rcpt-{uuid.uuid4()}",
            **body,
        }
        return await target.post("/v1/accruals", json=full, headers={**till, **idem()})

    await _check_all(engine, PURCHASE_CASES, send)
    # The same fields right: accepted.
    r = await send(
        _lines(
            {"sku": "LOTTO", "amount": 0},
            *[{"sku": f"s{i}", "category": "c" * 64, "amount": 2} for i in range(499)],
            amount=998,
            redeemed_amount=998,
        )
    )
    assert r.status_code == 200, r.text
    assert r.json()["eligible_amount"] == 0
    r = await send(_lines(LINE, redeemed_amount=0))
    assert r.status_code == 201, r.text


async def test_bad_basket_items_of_a_batch_refuse_the_batch_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    good = {
        "type": "purchase",
        "card_number": card,
        "currency": "EUR",
        "reference": "b-1",
        **_lines(LINE),
    }
    cases = [
        _bad("lines-short", {"items": [good, {**good, "reference": "b-2", "amount": 999}]}, None),
        _bad("redeemed-over", {"items": [{**good, "redeemed_amount": 1_001}]}, None),
        _bad("bad-line", {"items": [{**good, "lines": [{"sku": "", "amount": 1_000}]}]}, None),
    ]

    async def send(body: Any) -> Response:
        return await client.post("/v1/batches", json=body, headers={**till, **idem()})

    await _check_all(engine, cases, send)
    # The pointer names the item and the field.
    r = await send(cases[2][1])
    assert [e["pointer"] for e in r.json()["errors"]] == ["/items/0/lines/0/sku"], r.json()


async def test_the_pointer_into_a_basket_line_is_exact_whatever_else_the_line_carries(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    body = {
        "kind": "purchase",
        "card_number": card,
        "currency": "EUR",
        "reference": "rcpt-1",
        **_lines({"sku": "MILK", "amount": "1000", "kind": "amount"}),
    }
    before = await _written(engine)
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    _assert_problem(r, 422, "validation_error", None)
    assert await _written(engine) == before
    assert sorted(e["pointer"] for e in r.json()["errors"]) == [
        "/lines/0/amount",
        "/lines/0/kind",
    ]
    # The same with a stray `type` naming the failing field; the purchase's own `kind` (the
    # union's variant) still leaves no trace in the pointers.
    body["lines"] = [{"sku": "", "amount": 1_000, "type": "sku"}]
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    _assert_problem(r, 422, "validation_error", None)
    assert await _written(engine) == before
    assert sorted(e["pointer"] for e in r.json()["errors"]) == [
        "/lines/0/sku",
        "/lines/0/type",
    ]
