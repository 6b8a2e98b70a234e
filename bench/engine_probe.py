"""The `engine_accrual` scenario: accruals through the group-commit batcher inside the
load-generator process, with no HTTP at all. Its rate is the ceiling of the posting engine
(rules, asyncpg, PostgreSQL) on one Python process; the gap to `accrual_spread` is what the
HTTP layer (Uvicorn, FastAPI, validation) costs."""

import asyncio
import random
import resource
import time
import uuid
from typing import Any

from app.auth.keys import hash_key
from app.core.config import Settings
from app.db.engine import create_engine
from app.idempotency.service import request_fingerprint
from app.ledger.batcher import PostingBatcher
from app.ledger.engine import GroupItem
from app.ledger.schemas import PurchaseAccrualCreate
from app.programs.service import ensure_program
from bench.scenarios import Seed


async def run_engine(clients: int, duration: float, seed: Seed) -> dict[str, Any]:
    assert seed.database_url, "the seed file has no database_url"
    settings = Settings(database_url=seed.database_url, _env_file=None)
    engine = create_engine(seed.database_url, settings)
    async with engine.begin() as conn:
        program = await ensure_program(conn, settings)
    batcher = PostingBatcher(
        engine,
        program,
        settings,
        executors=settings.posting_executors,
        max_group=settings.posting_max_group,
    )
    rng = random.Random(uuid.uuid4().int)
    latencies: list[int] = []
    errors: list[str] = []

    async def client(deadline: float) -> None:
        while time.perf_counter() < deadline:
            partner = rng.choice(seed.partners)
            request = PurchaseAccrualCreate(
                kind="purchase",
                card_number=rng.choice(seed.cards),
                amount=rng.randint(100, 100_000),
                currency="EUR",
                reference=uuid.uuid4().hex,
            )
            item = GroupItem(
                request=request,
                key_hash=hash_key(partner["key"]),
                idempotency_key=uuid.uuid4().hex,
                fingerprint=request_fingerprint("POST", "/v1/accruals", request),
            )
            started = time.perf_counter_ns()
            outcome = await batcher.submit(item)
            latencies.append(time.perf_counter_ns() - started)
            if outcome.status != 201:
                errors.append(outcome.body.decode()[:300])

    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(*(client(started + duration) for _ in range(clients)))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    await batcher.close()
    await engine.dispose()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {
        "scenario": "engine_accrual",
        "clients": clients,
        "duration_s": round(wall, 3),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "postings": len(latencies) - len(errors),
        "postings_per_s": round((len(latencies) - len(errors)) / wall, 1),
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "errors": len(errors),
        "error_samples": errors[:5],
        # Here the generator *is* the engine: this is the posting engine's own CPU share.
        "loadgen_cpu_share": round(cpu / wall, 3),
    }
