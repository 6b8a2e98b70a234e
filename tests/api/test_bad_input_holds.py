"""Bad input to the hold endpoints (POST /v1/holds, /v1/holds/{id}/capture and /void, and
GET /v1/holds/{id}): a problem+json answer with a stable code, the offending field named by a
JSON pointer, and nothing written (no transaction, entry, hold, balance or Idempotency-Key).

As in test_bad_input.py, the table runs against one ledger built once for the module; each case
compares its own before/after snapshot, so a case that wrongly wrote something fails by itself."""

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.schemas import MAX_AMOUNT
from app.holds.schemas import MAX_TTL_SECONDS
from app.main import create_app
from tests.conftest import _admin, _with_database, idem
from tests.factories.api_keys import insert_api_key
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"
MAX_BODY = Settings.model_fields["max_body_bytes"].default

CARD = "<card>"
BAD_LUHN = "<card:bad-luhn>"
HOLD = "<hold>"
DROP = object()
"""A field value meaning: leave the field out."""


@dataclass
class World:
    app: FastAPI
    client: AsyncClient
    engine: AsyncEngine
    operator: dict[str, str]
    till: dict[str, str]
    values: dict[str, str]


@pytest.fixture(scope="module")
async def world(cluster_url: str, template_db: str) -> AsyncIterator[World]:
    name = f"ll_bad_input_holds_{os.getpid()}"
    await _admin(
        cluster_url,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"',
    )
    settings = Settings(
        database_url=_with_database(cluster_url, name),
        program_currency="EUR",
        hold_sweep_seconds=0,
        _env_file=None,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://ledger.test") as client:
                operator = {"Authorization": f"Bearer {await insert_api_key(app, role='operator')}"}
                _, till = await partner_with_key(app, client, operator)
                card = (await funded_card(client, operator, 1_000))["card_number"]
                # An open hold, so "nothing written" includes its state and the card's `held`.
                body = {"card_number": card, "asset": "points", "amount": 100, "reference": "O-1"}
                r = await client.post("/v1/holds", json=body, headers={**till, **idem()})
                assert r.status_code == 201, r.text
                yield World(
                    app=app,
                    client=client,
                    engine=app.state.engine,
                    operator=operator,
                    till=till,
                    values={
                        CARD: card,
                        BAD_LUHN: card[:-1] + str((int(card[-1]) + 1) % 10),
                        HOLD: r.json()["id"],
                    },
                )
    finally:
        await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions) AS transactions,"
                    " (SELECT count(*) FROM entries) AS entries,"
                    " (SELECT count(*) FROM holds) AS holds,"
                    " (SELECT count(*) FROM idempotency_keys) AS idempotency_keys"
                )
            )
        ).one()
        accounts = (
            await conn.execute(text("SELECT id, balance, held FROM accounts ORDER BY id"))
        ).all()
        holds = (
            await conn.execute(text("SELECT id, status, settled_by FROM holds ORDER BY id"))
        ).all()
    return {
        "counts": counts._asdict(),
        "accounts": [tuple(a) for a in accounts],
        "holds": [tuple(h) for h in holds],
    }


# --------------------------------------------------------------------------------------------
# The table

HOLDS = "/v1/holds"
CAPTURE = f"/v1/holds/{HOLD}/capture"
VOID = f"/v1/holds/{HOLD}/void"


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: Any = None
    status: int = 422
    code: str = "validation_error"
    pointer: str | None = None
    location: str = "body"
    content: bytes | None = None
    idempotency_key: bool = True
    method: str = "POST"


def hold(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"card_number": CARD, "asset": "points", "amount": 5, "reference": "O-2"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


def invalid(id: str, path: str, body: Any, pointer: str, location: str = "body") -> Any:
    return pytest.param(Case(id, path, body, pointer=pointer, location=location), id=id)


def refused(id: str, path: str, status: int, code: str, **fields: Any) -> Any:
    return pytest.param(Case(id, path, status=status, code=code, **fields), id=id)


BIG = "y" * (MAX_BODY + 1)

CASES = [
    # POST /v1/holds
    invalid("hold-unknown-field", HOLDS, hold(colour=1), "/colour"),
    invalid("hold-amount-string", HOLDS, hold(amount="5"), "/amount"),
    invalid("hold-amount-float", HOLDS, hold(amount=5.0), "/amount"),
    invalid("hold-amount-fraction", HOLDS, hold(amount=1.5), "/amount"),
    invalid("hold-amount-bool", HOLDS, hold(amount=True), "/amount"),
    invalid("hold-amount-zero", HOLDS, hold(amount=0), "/amount"),
    invalid("hold-amount-negative", HOLDS, hold(amount=-5), "/amount"),
    invalid("hold-amount-over-max", HOLDS, hold(amount=MAX_AMOUNT + 1), "/amount"),
    invalid("hold-amount-huge", HOLDS, hold(amount=10**30), "/amount"),
    invalid("hold-amount-null", HOLDS, hold(amount=None), "/amount"),
    invalid("hold-amount-missing", HOLDS, hold(amount=DROP), "/amount"),
    invalid("hold-ttl-zero", HOLDS, hold(ttl_seconds=0), "/ttl_seconds"),
    invalid("hold-ttl-negative", HOLDS, hold(ttl_seconds=-1), "/ttl_seconds"),
    invalid("hold-ttl-too-long", HOLDS, hold(ttl_seconds=MAX_TTL_SECONDS + 1), "/ttl_seconds"),
    invalid("hold-ttl-string", HOLDS, hold(ttl_seconds="60"), "/ttl_seconds"),
    invalid("hold-ttl-float", HOLDS, hold(ttl_seconds=60.0), "/ttl_seconds"),
    invalid("hold-ttl-bool", HOLDS, hold(ttl_seconds=True), "/ttl_seconds"),
    invalid("hold-card-bad-luhn", HOLDS, hold(card_number=BAD_LUHN), "/card_number"),
    invalid("hold-card-letters", HOLDS, hold(card_number="7000abcd56789016"), "/card_number"),
    invalid("hold-card-too-short", HOLDS, hold(card_number="1234567"), "/card_number"),
    invalid("hold-card-too-long", HOLDS, hold(card_number="1" * 20), "/card_number"),
    invalid("hold-card-int", HOLDS, hold(card_number=7000123456789016), "/card_number"),
    invalid("hold-card-missing", HOLDS, hold(card_number=DROP), "/card_number"),
    invalid("hold-asset-unknown", HOLDS, hold(asset="miles"), "/asset"),
    invalid("hold-asset-case", HOLDS, hold(asset="POINTS"), "/asset"),
    invalid("hold-asset-missing", HOLDS, hold(asset=DROP), "/asset"),
    invalid("hold-reference-empty", HOLDS, hold(reference=""), "/reference"),
    invalid("hold-reference-spaces", HOLDS, hold(reference=" O-3 "), "/reference"),
    invalid("hold-reference-too-long", HOLDS, hold(reference="O" * 65), "/reference"),
    invalid("hold-reference-int", HOLDS, hold(reference=5), "/reference"),
    invalid("hold-reference-missing", HOLDS, hold(reference=DROP), "/reference"),
    invalid("hold-partner-not-uuid", HOLDS, hold(partner_id="acme"), "/partner_id"),
    refused("hold-not-an-object", HOLDS, 422, "validation_error", body=[hold()]),
    refused("hold-oversized", HOLDS, 413, "payload_too_large", body=hold(note=BIG)),
    refused("hold-malformed-json", HOLDS, 400, "malformed_json", content=b'{"amount": 5'),
    refused(
        "hold-no-idempotency-key",
        HOLDS,
        400,
        "idempotency_key_required",
        body=hold(),
        idempotency_key=False,
    ),
    # POST /v1/holds/{id}/capture
    invalid("capture-amount-zero", CAPTURE, {"amount": 0}, "/amount"),
    invalid("capture-amount-negative", CAPTURE, {"amount": -1}, "/amount"),
    invalid("capture-amount-string", CAPTURE, {"amount": "5"}, "/amount"),
    invalid("capture-amount-float", CAPTURE, {"amount": 1.5}, "/amount"),
    invalid("capture-amount-bool", CAPTURE, {"amount": True}, "/amount"),
    invalid("capture-amount-huge", CAPTURE, {"amount": MAX_AMOUNT + 1}, "/amount"),
    invalid("capture-unknown-field", CAPTURE, {"colour": 1}, "/colour"),
    invalid("capture-reason-empty", CAPTURE, {"reason": ""}, "/reason"),
    invalid("capture-reason-too-long", CAPTURE, {"reason": "r" * 501}, "/reason"),
    invalid("capture-reason-int", CAPTURE, {"reason": 5}, "/reason"),
    invalid("capture-bad-id", "/v1/holds/not-a-uuid/capture", {}, "/hold_id", "path"),
    refused("capture-oversized", CAPTURE, 413, "payload_too_large", body={"reason": BIG}),
    refused("capture-malformed-json", CAPTURE, 400, "malformed_json", content=b"{amount: 5}"),
    refused(
        "capture-no-idempotency-key",
        CAPTURE,
        400,
        "idempotency_key_required",
        body={},
        idempotency_key=False,
    ),
    # POST /v1/holds/{id}/void
    invalid("void-amount", VOID, {"amount": 5}, "/amount"),
    invalid("void-reason-empty", VOID, {"reason": ""}, "/reason"),
    invalid("void-reason-int", VOID, {"reason": 5}, "/reason"),
    invalid("void-bad-id", "/v1/holds/12345/void", {}, "/hold_id", "path"),
    refused("void-oversized", VOID, 413, "payload_too_large", body={"reason": BIG}),
    refused("void-malformed-json", VOID, 400, "malformed_json", content=b"["),
    refused(
        "void-no-idempotency-key",
        VOID,
        400,
        "idempotency_key_required",
        body={},
        idempotency_key=False,
    ),
    # GET /v1/holds/{id}
    pytest.param(
        Case(
            "get-bad-id", "/v1/holds/not-a-uuid", pointer="/hold_id", location="path", method="GET"
        ),
        id="get-bad-id",
    ),
]


def resolve(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for marker, real in values.items():
            value = value.replace(marker, real)
        return value
    if isinstance(value, dict):
        return {k: resolve(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, values) for v in value]
    return value


@pytest.mark.parametrize("bad", CASES)
async def test_bad_hold_input_is_refused_and_writes_nothing(world: World, bad: Case) -> None:
    headers = {**world.till, **(idem() if bad.idempotency_key else {})}
    request: dict[str, Any] = {"headers": headers}
    if bad.content is not None:
        headers["Content-Type"] = "application/json"
        request["content"] = bad.content
    elif bad.method == "POST":
        request["json"] = resolve(bad.body, world.values)

    before = await snapshot(world.engine)
    response = await world.client.request(bad.method, resolve(bad.path, world.values), **request)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert (problem["status"], problem["code"]) == (bad.status, bad.code), problem
    if bad.pointer is not None:
        assert [(e["location"], e["pointer"]) for e in problem["errors"]] == [
            (bad.location, bad.pointer)
        ], problem["errors"]
    assert await snapshot(world.engine) == before


async def test_the_tables_valid_bodies_are_accepted(world: World) -> None:
    """The cases above differ from an accepted request by the one field they name."""
    client, till = world.client, world.till
    r = await client.post(
        HOLDS,
        json=resolve(hold(ttl_seconds=MAX_TTL_SECONDS), world.values),
        headers={**till, **idem()},
    )
    assert r.status_code == 201, r.text
    hold_id = r.json()["id"]
    r = await client.post(
        f"/v1/holds/{hold_id}/capture",
        json={"amount": 5, "reason": "r" * 500},
        headers={**till, **idem()},
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        HOLDS,
        json=resolve(hold(amount=1, reference="O" * 64, ttl_seconds=1), world.values),
        headers={**till, **idem()},
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/v1/holds/{r.json()['id']}/void", json={"reason": "v"}, headers={**till, **idem()}
    )
    assert r.status_code == 200, r.text
    assert (await client.get("/v1/audit", headers=world.operator)).json()["ok"] is True


async def test_an_unknown_hold_is_not_found_and_writes_nothing_but_its_answer(
    world: World,
) -> None:
    """A well-formed id of no hold: 404, stored as the key's answer (a retry gets the same),
    nothing else written."""
    before = await snapshot(world.engine)
    path = f"/v1/holds/{uuid.uuid4()}/capture"
    key = idem()
    r = await world.client.post(path, json={}, headers={**world.till, **key})
    assert (r.status_code, r.json()["code"]) == (404, "hold_not_found")
    again = await world.client.post(path, json={}, headers={**world.till, **key})
    assert (again.status_code, again.json()["code"]) == (404, "hold_not_found")
    assert again.headers["Idempotent-Replayed"] == "true"
    after = await snapshot(world.engine)
    assert after["counts"]["idempotency_keys"] == before["counts"]["idempotency_keys"] + 1
    after["counts"]["idempotency_keys"] -= 1
    assert after == before
