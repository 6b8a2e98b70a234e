"""Authentication: who may call at all, and the life of an API key (create, list, revoke)."""

import hashlib
import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories.api_keys import bearer
from tests.factories.cards import issue_card
from tests.factories.partners import create_partner

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/problems/{code.replace('_', '-')}"
    return body


def assert_unauthorized(response: Response) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def create_key_via_api(
    client: AsyncClient, operator: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json=body, headers=operator)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# Read and write routes alike: authentication comes before anything else.
PROTECTED = [
    ("GET", "/v1/api-keys", None),
    (
        "POST",
        "/v1/partners",
        {"code": "x", "name": "X", "earn_rate": {"points": 1, "per_amount": 1}},
    ),
    ("POST", "/v1/cards", {}),
    ("GET", "/v1/cards/79927398713", None),
    ("GET", "/v1/cards/79927398713/balance", None),
    ("GET", f"/v1/transactions/{uuid.uuid4()}", None),
]


async def test_no_authorization_header_is_401(client: AsyncClient) -> None:
    for method, path, body in PROTECTED:
        response = await client.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert_unauthorized(response)


MALFORMED = ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "llk_notascheme", "Token llk_abc", ""]


async def test_malformed_authorization_header_is_401(
    client: AsyncClient, operator_key: str
) -> None:
    for header in MALFORMED:
        response = await client.get("/v1/api-keys", headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        assert_unauthorized(response)


async def test_valid_key_sent_with_another_scheme_is_401(
    client: AsyncClient, operator_key: str
) -> None:
    response = await client.get("/v1/api-keys", headers={"Authorization": f"Basic {operator_key}"})
    assert_unauthorized(response)


async def test_unknown_key_is_401(client: AsyncClient, operator_key: str) -> None:
    # Same shape as a real key, one character off.
    last = "A" if operator_key[-1] != "A" else "B"
    unknown = operator_key[:-1] + last
    response = await client.get("/v1/api-keys", headers=bearer(unknown))
    assert_unauthorized(response)
    response = await client.get("/v1/api-keys", headers=bearer("llk_" + "x" * 43))
    assert_unauthorized(response)


async def test_scheme_is_case_insensitive(client: AsyncClient, operator_key: str) -> None:
    response = await client.get("/v1/api-keys", headers={"Authorization": f"bearer {operator_key}"})
    assert response.status_code == 200, response.text


async def test_revoked_key_is_401(client: AsyncClient, operator: dict[str, str]) -> None:
    created = await create_key_via_api(client, operator, name="till", role="operator")
    key_headers = bearer(created["key"])
    assert (await client.get("/v1/api-keys", headers=key_headers)).status_code == 200

    response = await client.post(f"/v1/api-keys/{created['id']}/revoke", headers=operator)
    assert response.status_code == 200, response.text
    revoked = response.json()
    assert revoked["id"] == created["id"]
    assert revoked["revoked_at"] is not None

    assert_unauthorized(await client.get("/v1/api-keys", headers=key_headers))
    assert_unauthorized(await client.post("/v1/cards", json={}, headers=key_headers))
    # The operator key that revoked it still works.
    assert (await client.get("/v1/api-keys", headers=operator)).status_code == 200


async def test_revoked_partner_key_cannot_post(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    created = await create_key_via_api(
        client, operator, name="till", role="partner", partner_id=partner["id"]
    )
    card = await issue_card(client, operator)
    await client.post(f"/v1/api-keys/{created['id']}/revoke", headers=operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card["card_number"],
            "amount": 10_000,
            "currency": "EUR",
            "reference": "R-1",
        },
        headers={**bearer(created["key"]), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert_unauthorized(response)
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM transactions"))).scalar_one()
    assert count == 0


async def test_revoking_twice_keeps_the_first_time(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    created = await create_key_via_api(client, operator, name="till", role="operator")
    first = await client.post(f"/v1/api-keys/{created['id']}/revoke", headers=operator)
    second = await client.post(f"/v1/api-keys/{created['id']}/revoke", headers=operator)
    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] == second.json()["revoked_at"]


async def test_revoking_an_unknown_key_is_404(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    response = await client.post(f"/v1/api-keys/{uuid.uuid4()}/revoke", headers=operator)
    assert_problem(response, 404, "api_key_not_found")


async def test_operator_creates_partner_key_secret_shown_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    created = await create_key_via_api(
        client, operator, name="Till 3", role="partner", partner_id=partner["id"]
    )
    secret = created["key"]
    assert secret.startswith("llk_")
    assert len(secret) == 4 + 43
    assert created["role"] == "partner"
    assert created["partner_id"] == partner["id"]
    assert created["name"] == "Till 3"
    assert created["key_prefix"] == secret[:12]
    assert created["revoked_at"] is None

    # The new key works, as its partner.
    card = await issue_card(client, bearer(secret))
    assert card["status"] == "active"

    listing = await client.get("/v1/api-keys", headers=operator)
    assert listing.status_code == 200
    assert secret not in listing.text
    rows = {row["id"]: row for row in listing.json()}
    assert created["id"] in rows
    row = rows[created["id"]]
    assert "key" not in row
    assert row == {k: v for k, v in created.items() if k != "key"}

    # Only the hash is stored.
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT key_hash, key_prefix FROM api_keys WHERE id = :id"),
                {"id": uuid.UUID(created["id"])},
            )
        ).one()
        dump = (await conn.execute(text("SELECT api_keys::text FROM api_keys"))).scalars().all()
    assert bytes(stored.key_hash) == hashlib.sha256(secret.encode()).digest()
    assert stored.key_prefix == secret[:12]
    assert not any(secret in line for line in dump)


async def test_list_includes_every_key_of_the_program(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    a = await create_key_via_api(client, operator, name="a", role="operator")
    b = await create_key_via_api(client, operator, name="b", role="operator")
    listing = (await client.get("/v1/api-keys", headers=operator)).json()
    # The fixture's operator key, and the two just made.
    assert len(listing) == 3
    assert {a["id"], b["id"]} <= {row["id"] for row in listing}


async def test_role_and_partner_must_agree(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    for body in [
        {"name": "till", "role": "partner"},
        {"name": "till", "role": "partner", "partner_id": None},
        {"name": "ops", "role": "operator", "partner_id": partner["id"]},
    ]:
        response = await client.post("/v1/api-keys", json=body, headers=operator)
        assert response.status_code == 422, (body, response.text)
        assert_problem(response, 422, "partner_required")
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
    assert count == 1  # the fixture's operator key


async def test_partner_key_for_unknown_partner_is_404(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/api-keys",
        json={"name": "till", "role": "partner", "partner_id": str(uuid.uuid4())},
        headers=operator,
    )
    assert_problem(response, 404, "partner_not_found")


async def test_invalid_key_requests_are_422(client: AsyncClient, operator: dict[str, str]) -> None:
    for body in [
        {"name": "", "role": "operator"},
        {"name": "x", "role": "admin"},
        {"name": "x", "role": "operator", "extra": 1},
        {"role": "operator"},
        {"name": "x", "role": "partner", "partner_id": "not-a-uuid"},
    ]:
        response = await client.post("/v1/api-keys", json=body, headers=operator)
        assert response.status_code == 422, (body, response.text)
        assert_problem(response, 422, "validation_error")
