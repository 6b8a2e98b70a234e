"""Bad input to the campaign API (POST /v1/campaigns, GET /v1/campaigns/{id},
POST /v1/campaigns/{id}/end): a problem+json answer with a stable code (and a JSON pointer to
the field at fault), and nothing written."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"
MAX_AMOUNT = 10**12
CAMPAIGNS = "/v1/campaigns"

START = datetime.now(UTC) - timedelta(hours=1)
END = START + timedelta(days=7)


def good(**overrides: Any) -> dict[str, Any]:
    """A valid multiplier; each case changes one thing (None drops the field)."""
    body = {
        "code": "double-may",
        "name": "Double points in May",
        "kind": "multiplier",
        "points_pct": 100,
        "starts_at": START.isoformat(),
        "ends_at": END.isoformat(),
        **overrides,
    }
    return {k: v for k, v in body.items() if v is not None}


def first(**overrides: Any) -> dict[str, Any]:
    """A valid first-purchase campaign, changed likewise."""
    return good(**{"kind": "first_purchase", "points_pct": None, "bonus_points": 500, **overrides})


async def _written(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM campaigns),"
                    " (SELECT array_agg(id::text || ':' || version || ':' || ends_at::text"
                    "  ORDER BY id) FROM campaigns)"
                )
            )
        ).one()
    return tuple(row)


# Model-level refusals (incoherent combinations) point at the body as a whole: "/".
WHOLE = "/"

# (name, body, status, code, pointer)
BODY_CASES: list[tuple[str, Any, int, str, str | None]] = [
    ("unknown-field", good(colour="red"), 422, "validation_error", "/colour"),
    ("spent-points-given", good(spent_points=5), 422, "validation_error", "/spent_points"),
    ("version-given", good(version=3), 422, "validation_error", "/version"),
    ("missing-code", good(code=None), 422, "validation_error", "/code"),
    ("missing-name", good(name=None), 422, "validation_error", "/name"),
    ("missing-kind", good(kind=None), 422, "validation_error", "/kind"),
    ("missing-starts-at", good(starts_at=None), 422, "validation_error", "/starts_at"),
    ("missing-ends-at", good(ends_at=None), 422, "validation_error", "/ends_at"),
    ("empty-object", {}, 422, "validation_error", "/code"),
    # The code's pattern: ^[a-z0-9][a-z0-9_-]{0,63}$
    ("upper-case-code", good(code="Double"), 422, "validation_error", "/code"),
    ("leading-dash-code", good(code="-double"), 422, "validation_error", "/code"),
    ("leading-underscore-code", good(code="_double"), 422, "validation_error", "/code"),
    ("spaced-code", good(code="double may"), 422, "validation_error", "/code"),
    ("dotted-code", good(code="double.may"), 422, "validation_error", "/code"),
    ("non-ascii-code", good(code="prämie"), 422, "validation_error", "/code"),
    ("empty-code", good(code=""), 422, "validation_error", "/code"),
    ("long-code", good(code="a" * 65), 422, "validation_error", "/code"),
    ("trailing-newline-code", good(code="double\n"), 422, "validation_error", "/code"),
    ("number-code", good(code=5), 422, "validation_error", "/code"),
    ("empty-name", good(name=""), 422, "validation_error", "/name"),
    ("long-name", good(name="n" * 201), 422, "validation_error", "/name"),
    ("unknown-kind", good(kind="cashback"), 422, "validation_error", "/kind"),
    ("upper-case-kind", good(kind="MULTIPLIER"), 422, "validation_error", "/kind"),
    # points_pct: a strict integer, 1..1000 for a multiplier.
    ("string-pct", good(points_pct="100"), 422, "validation_error", "/points_pct"),
    ("float-pct", good(points_pct=12.5), 422, "validation_error", "/points_pct"),
    ("integral-float-pct", good(points_pct=100.0), 422, "validation_error", "/points_pct"),
    ("bool-pct", good(points_pct=True), 422, "validation_error", "/points_pct"),
    ("negative-pct", good(points_pct=-1), 422, "validation_error", "/points_pct"),
    ("pct-over-max", good(points_pct=1_001), 422, "validation_error", "/points_pct"),
    ("zero-pct", good(points_pct=0), 422, "validation_error", WHOLE),
    ("no-pct", good(points_pct=None), 422, "validation_error", WHOLE),
    ("multiplier-with-bonus", good(bonus_points=10), 422, "validation_error", WHOLE),
    # first_purchase: bonus_points > 0, no points_pct, no categories.
    ("first-without-bonus", first(bonus_points=None), 422, "validation_error", WHOLE),
    ("first-zero-bonus", first(bonus_points=0), 422, "validation_error", WHOLE),
    ("first-negative-bonus", first(bonus_points=-5), 422, "validation_error", "/bonus_points"),
    (
        "first-bonus-over-max",
        first(bonus_points=MAX_AMOUNT + 1),
        422,
        "validation_error",
        "/bonus_points",
    ),
    ("first-string-bonus", first(bonus_points="500"), 422, "validation_error", "/bonus_points"),
    ("first-with-pct", first(points_pct=50), 422, "validation_error", WHOLE),
    ("first-with-categories", first(categories=["shoes"]), 422, "validation_error", WHOLE),
    # The window: aware datetimes, the start before the end.
    ("naive-start", good(starts_at="2026-05-01T00:00:00"), 422, "validation_error", "/starts_at"),
    ("naive-end", good(ends_at="2099-05-31T23:59:59"), 422, "validation_error", "/ends_at"),
    ("date-only-start", good(starts_at="2026-05-01"), 422, "validation_error", "/starts_at"),
    ("garbage-start", good(starts_at="tomorrow"), 422, "validation_error", "/starts_at"),
    ("null-start", good(starts_at=None) | {"starts_at": None}, 422, "validation_error", None),
    ("empty-window", good(ends_at=START.isoformat()), 422, "validation_error", WHOLE),
    (
        "backwards-window",
        good(starts_at=END.isoformat(), ends_at=START.isoformat()),
        422,
        "validation_error",
        WHOLE,
    ),
    (
        # The same instant written in two offsets is still an empty window.
        "same-instant-other-offset",
        good(ends_at=START.astimezone(timezone(timedelta(hours=2))).isoformat()),
        422,
        "validation_error",
        WHOLE,
    ),
    # Scopes.
    ("non-uuid-partner", good(partner_id="shop-1"), 422, "validation_error", "/partner_id"),
    ("number-partner", good(partner_id=12), 422, "validation_error", "/partner_id"),
    ("empty-categories", good(categories=[]), 422, "validation_error", "/categories"),
    ("string-categories", good(categories="shoes"), 422, "validation_error", "/categories"),
    ("empty-category", good(categories=[""]), 422, "validation_error", "/categories/0"),
    ("long-category", good(categories=["c" * 65]), 422, "validation_error", "/categories/0"),
    ("number-category", good(categories=[7]), 422, "validation_error", "/categories/0"),
    (
        "too-many-categories",
        good(categories=[f"c{i}" for i in range(101)]),
        422,
        "validation_error",
        "/categories",
    ),
    ("empty-tiers", good(tiers=[]), 422, "validation_error", "/tiers"),
    ("upper-case-tier", good(tiers=["Gold"]), 422, "validation_error", "/tiers/0"),
    ("long-tier", good(tiers=["t" * 33]), 422, "validation_error", "/tiers/0"),
    (
        "too-many-tiers",
        good(tiers=[f"t{i}" for i in range(21)]),
        422,
        "validation_error",
        "/tiers",
    ),
    # Funding and budget.
    ("unknown-funder", good(funded_by="nobody"), 422, "validation_error", "/funded_by"),
    ("partner-funds-no-partner", good(funded_by="partner"), 422, "validation_error", WHOLE),
    ("zero-budget", good(budget_points=0), 422, "validation_error", "/budget_points"),
    ("negative-budget", good(budget_points=-5), 422, "validation_error", "/budget_points"),
    ("string-budget", good(budget_points="100"), 422, "validation_error", "/budget_points"),
    ("float-budget", good(budget_points=1.5), 422, "validation_error", "/budget_points"),
    (
        "budget-over-max",
        good(budget_points=MAX_AMOUNT + 1),
        422,
        "validation_error",
        "/budget_points",
    ),
    ("huge-budget", good(budget_points=10**30), 422, "validation_error", "/budget_points"),
    # Not an object.
    ("array-body", [good()], 422, "validation_error", None),
    ("string-body", "double-may", 422, "validation_error", None),
    ("null-body", None, 422, "validation_error", None),
    ("oversized-body", good(name="y" * 70_000), 413, "payload_too_large", None),
]


def _assert_problem(response: Any, status: int, code: str, pointer: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body


async def test_bad_campaign_bodies_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Every case against one database (a database per case would cost seconds): each answer
    is checked, and the campaigns table after each."""
    before = await _written(engine)
    assert before[0] == 0
    for name, body, status, code, pointer in BODY_CASES:
        response = await client.post(CAMPAIGNS, json=body, headers=operator)
        try:
            _assert_problem(response, status, code, pointer)
            assert await _written(engine) == before
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc

    # And each valid neighbour of those cases goes through.
    partner, _ = await partner_with_key(app, client, operator)
    for body in (
        good(),
        good(code="0", points_pct=1_000, categories=["c" * 64], tiers=["t" * 32]),
        good(code="a" + "-_9" * 21, points_pct=1, budget_points=MAX_AMOUNT),
        good(code="partner-funded", partner_id=partner["id"], funded_by="partner"),
        first(code="welcome", bonus_points=MAX_AMOUNT, tiers=["gold", "silver"]),
    ):
        r = await client.post(CAMPAIGNS, json=body, headers=operator)
        assert r.status_code == 201, (body, r.text)
    assert (await _written(engine))[0] == 5


async def _streamed(size: int) -> AsyncIterator[bytes]:
    """A chunked body of `size` bytes that announces no length."""
    for _ in range(size // 1024):
        yield b" " * 1024


async def test_requests_wrong_outside_the_body_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    r = await client.post(CAMPAIGNS, json=good(), headers=operator)
    assert r.status_code == 201, r.text
    campaign = r.json()
    before = await _written(engine)
    one = f"{CAMPAIGNS}/{campaign['id']}"

    cases: list[tuple[str, Any, int, str, str | None]] = [
        (
            "get-non-uuid-id",
            lambda: client.get(f"{CAMPAIGNS}/double-may", headers=operator),
            422,
            "validation_error",
            "/campaign_id",
        ),
        (
            "end-non-uuid-id",
            lambda: client.post(f"{CAMPAIGNS}/not-a-uuid/end", headers=operator),
            422,
            "validation_error",
            "/campaign_id",
        ),
        (
            "end-numeric-id",
            lambda: client.post(f"{CAMPAIGNS}/12345/end", headers=operator),
            422,
            "validation_error",
            "/campaign_id",
        ),
        (
            "get-unknown-id",
            lambda: client.get(f"{CAMPAIGNS}/{uuid.uuid4()}", headers=operator),
            404,
            "campaign_not_found",
            None,
        ),
        (
            "end-unknown-id",
            lambda: client.post(f"{CAMPAIGNS}/{uuid.uuid4()}/end", headers=operator),
            404,
            "campaign_not_found",
            None,
        ),
        (
            "change-terms",
            lambda: client.put(one, json=good(points_pct=200), headers=operator),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "delete",
            lambda: client.delete(one, headers=operator),
            405,
            "method_not_allowed",
            None,
        ),
        (
            "partner-key-creates",
            lambda: client.post(CAMPAIGNS, json=good(code="till"), headers=till),
            403,
            "forbidden",
            None,
        ),
        (
            "partner-key-ends",
            lambda: client.post(f"{one}/end", headers=till),
            403,
            "forbidden",
            None,
        ),
        (
            "no-credentials",
            lambda: client.post(CAMPAIGNS, json=good(code="anon")),
            401,
            "unauthorized",
            None,
        ),
        (
            "unknown-key",
            lambda: client.post(f"{one}/end", headers={"Authorization": "Bearer not-a-key"}),
            401,
            "unauthorized",
            None,
        ),
        (
            "malformed-json",
            lambda: client.post(
                CAMPAIGNS,
                content=b'{"code": "x"',
                headers={**operator, "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
            None,
        ),
        (
            "no-body",
            lambda: client.post(CAMPAIGNS, headers=operator),
            422,
            "validation_error",
            None,
        ),
        (
            "oversized-undeclared",
            lambda: client.post(
                CAMPAIGNS,
                content=_streamed(70 * 1024),  # no Content-Length
                headers={**operator, "Content-Type": "application/json"},
            ),
            413,
            "payload_too_large",
            None,
        ),
    ]
    for name, request, status, code, pointer in cases:
        response = await request()
        try:
            _assert_problem(response, status, code, pointer)
            assert await _written(engine) == before
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc

    # The campaign is as it was: still running, and it can be ended.
    r = await client.post(f"{one}/end", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
