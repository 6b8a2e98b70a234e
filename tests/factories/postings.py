"""Posting requests as a till sends them: each with its own Idempotency-Key. They return the
un-awaited request, so tests can gather many at once."""

import uuid
from collections.abc import Coroutine
from typing import Any

from httpx import AsyncClient, Response


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def redeem(
    client: AsyncClient,
    headers: dict[str, str],
    card_number: str,
    amount: int,
    reference: str,
    asset: str = "points",
) -> Coroutine[Any, Any, Response]:
    return client.post(
        "/v1/redemptions",
        json={"card_number": card_number, "asset": asset, "amount": amount, "reference": reference},
        headers={**headers, **_key()},
    )


def purchase(
    client: AsyncClient, headers: dict[str, str], card_number: str, amount: int, reference: str
) -> Coroutine[Any, Any, Response]:
    return client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card_number,
            "amount": amount,
            "currency": "EUR",
            "reference": reference,
        },
        headers={**headers, **_key()},
    )
