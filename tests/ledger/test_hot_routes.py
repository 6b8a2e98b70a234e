"""app/ledger/hot_http.py answers three routes beneath FastAPI; the FastAPI routes for them
remain and must answer the same. Both apps serve the same database here; every request is
sent to each, and the answers (status, content type, body without the varying fields) must
agree."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from app.core.config import Settings
from app.main import create_app
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key

# Each posting moves the balance the next one reports, so the two answers differ there.
VARYING = {"transaction_id", "occurred_at", "posted_at", "reference", "balance"}


@pytest.fixture
async def plain_client(settings: Settings) -> AsyncIterator[AsyncClient]:
    plain = create_app(settings, hot_routes=False)
    async with plain.router.lifespan_context(plain):
        transport = ASGITransport(app=plain)
        async with AsyncClient(transport=transport, base_url="http://ledger.test") as c:
            yield c


def _comparable(raw: bytes) -> Any:
    body = json.loads(raw) if raw else None
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in VARYING}
    return body


async def test_hot_and_fastapi_routes_answer_alike(
    app: FastAPI, client: AsyncClient, plain_client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    broken_luhn = card[:-1] + str((int(card[-1]) + 1) % 10)
    purchase = {"kind": "purchase", "card_number": card, "amount": 250, "currency": "EUR"}
    spend = {"card_number": card, "asset": "points", "amount": 1}
    cases: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/v1/accruals", {**till, "Idempotency-Key": "k"}, purchase),
        ("POST", "/v1/redemptions", {**till, "Idempotency-Key": "k"}, spend),
        ("POST", "/v1/redemptions", {**till, "Idempotency-Key": "k"}, {**spend, "amount": 10**6}),
        ("POST", "/v1/accruals", till, purchase),  # no Idempotency-Key
        ("POST", "/v1/accruals", {"Idempotency-Key": "k"}, purchase),  # no API key
        ("POST", "/v1/accruals", {**till, "Idempotency-Key": " "}, purchase),
        ("POST", "/v1/accruals", {**till, "Idempotency-Key": "k"}, {**purchase, "amount": "1"}),
        ("POST", "/v1/accruals", {**till, "Idempotency-Key": "k"}, {**purchase, "kind": "x"}),
        ("POST", "/v1/redemptions", {**till, "Idempotency-Key": "k"}, [1, 2]),
        ("POST", "/v1/redemptions", {**till, "Idempotency-Key": "k"}, b"{not json"),
        ("POST", "/v1/redemptions", {**till, "Idempotency-Key": "k"}, None),
        ("GET", f"/v1/cards/{card}/balance", till, None),
        ("GET", f"/v1/cards/{broken_luhn}/balance", till, None),
        ("GET", "/v1/cards/12ab/balance", till, None),
        ("GET", f"/v1/cards/{card}/balance", {}, None),
    ]
    for method, path, headers, body in cases:
        answers = []
        for target in (client, plain_client):
            sent = dict(headers)
            if "Idempotency-Key" in sent and sent["Idempotency-Key"] == "k":
                sent["Idempotency-Key"] = str(uuid.uuid4())
            payload = body
            if (isinstance(body, dict) and "kind" in body) or (
                isinstance(body, dict) and "asset" in body
            ):
                payload = {**body, "reference": str(uuid.uuid4())}
            if isinstance(payload, bytes):
                response = await target.request(
                    method,
                    path,
                    content=payload,
                    headers={**sent, "Content-Type": "application/json"},
                )
            elif payload is None and method == "POST":
                response = await target.request(method, path, headers=sent)
            else:
                response = await target.request(method, path, json=payload, headers=sent)
            answers.append(
                (
                    response.status_code,
                    response.headers.get("content-type"),
                    response.headers.get("www-authenticate"),
                    _comparable(response.content),
                )
            )
        assert answers[0] == answers[1], (method, path, headers, body)
