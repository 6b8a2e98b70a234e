"""What each benchmark scenario sends. A scenario is a factory of requests; the generator
calls it once per request, so every request has its own Idempotency-Key and reference."""

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Seed:
    """What bench.seed created: keys and ids the scenarios address."""

    operator_key: str
    partners: list[dict[str, str]]
    """Each: {"id": ..., "key": ...} (a partner till key)."""
    cards: list[str]
    database_url: str | None = None
    """For the in-process engine scenario (bench/engine_probe.py)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Seed":
        return cls(data["operator_key"], data["partners"], data["cards"], data.get("database_url"))


def _one(body: bytes) -> int:
    return 1


def _none(body: bytes) -> int:
    return 0


def _batch_posted(body: bytes) -> int:
    return int(json.loads(body)["posted"])


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None
    count_postings: Callable[[bytes], int] = field(default=_one)


Factory = Callable[[Seed, random.Random], Callable[[], Request]]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _purchase(rng: random.Random, card: str) -> dict[str, Any]:
    return {
        "kind": "purchase",
        "card_number": card,
        "amount": rng.randint(100, 100_000),
        "currency": "EUR",
        "reference": uuid.uuid4().hex,
    }


def _redemption(card: str) -> dict[str, Any]:
    return {"card_number": card, "asset": "points", "amount": 1, "reference": uuid.uuid4().hex}


def _post(path: str, key: str, body: dict[str, Any]) -> Request:
    headers = {**_auth(key), "Idempotency-Key": uuid.uuid4().hex}
    return Request("POST", path, headers, json.dumps(body).encode())


def accrual_spread(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    def make() -> Request:
        partner = rng.choice(seed.partners)
        return _post("/v1/accruals", partner["key"], _purchase(rng, rng.choice(seed.cards)))

    return make


def accrual_hot(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    hot = seed.partners[0]

    def make() -> Request:
        return _post("/v1/accruals", hot["key"], _purchase(rng, rng.choice(seed.cards)))

    return make


def redemption(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    def make() -> Request:
        partner = rng.choice(seed.partners)
        return _post("/v1/redemptions", partner["key"], _redemption(rng.choice(seed.cards)))

    return make


def balance(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    def make() -> Request:
        partner = rng.choice(seed.partners)
        path = f"/v1/cards/{rng.choice(seed.cards)}/balance"
        return Request("GET", path, _auth(partner["key"]), count_postings=_none)

    return make


def pos_mix(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    """A till's day: 70% balance checks, 20% accruals, 10% redemptions."""
    reads, accruals, redemptions = (
        balance(seed, rng),
        accrual_spread(seed, rng),
        redemption(seed, rng),
    )

    def make() -> Request:
        roll = rng.random()
        if roll < 0.7:
            return reads()
        return accruals() if roll < 0.9 else redemptions()

    return make


BATCH_SIZE = 500


def batch(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    """An offline till uploading its day: 90% accruals, 10% redemptions, one partner per batch."""

    def make() -> Request:
        partner = rng.choice(seed.partners)
        items = []
        for _ in range(BATCH_SIZE):
            card = rng.choice(seed.cards)
            if rng.random() < 0.9:
                items.append({"type": "purchase", **_purchase(rng, card)})
            else:
                items.append({"type": "redemption", **_redemption(card)})
        request = _post("/v1/batches", partner["key"], {"items": items})
        return Request(request.method, request.path, request.headers, request.body, _batch_posted)

    return make


def health(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    request = Request("GET", "/health", {}, count_postings=_none)
    return lambda: request


def engine_accrual(seed: Seed, rng: random.Random) -> Callable[[], Request]:
    raise NotImplementedError("runs in-process: see bench/engine_probe.py")


SCENARIOS: dict[str, Factory] = {
    "accrual_spread": accrual_spread,
    "accrual_hot": accrual_hot,
    "redemption": redemption,
    "balance": balance,
    "pos_mix": pos_mix,
    "batch": batch,
    "health": health,
    "engine_accrual": engine_accrual,
}
