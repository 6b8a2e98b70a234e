"""The ASGI application: routers, error handlers, and the lifetime of the pool and of the
background work (group commit, the hold sweep)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.agreements.router import router as agreements_router
from app.audit.router import router as audit_router
from app.auth.router import router as api_keys_router
from app.batches.router import router as batches_router
from app.cards.router import router as cards_router
from app.core.body_limit import BodySizeLimit
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers
from app.core.periodic import run_every
from app.core.schemas import Problem
from app.db.engine import create_engine
from app.db.migrate import head_revision
from app.expiry.run import points_expired as expire
from app.health.router import router as health_router
from app.holds.expiry import sweep
from app.holds.router import router as holds_router
from app.idempotency.retention import purge
from app.ledger.batcher import PostingBatcher
from app.ledger.hot_http import HotRoutes
from app.ledger.router import router as ledger_router
from app.partners.router import router as partners_router
from app.pending.service import release_run
from app.programs.service import ensure_program
from app.reports.router import router as reports_router
from app.rules.review import review
from app.rules.router import router as rules_router
from app.settlement.router import router as settlement_router
from app.settlement.service import close_run


def create_app(settings: Settings | None = None, *, hot_routes: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set. Start the service with `loyalty-ledger serve` "
                "(or `make run`), which starts an embedded PostgreSQL when it is unset."
            )
        engine = create_engine(settings.database_url, settings)
        app.state.engine = engine
        async with engine.begin() as conn:
            app.state.program = await ensure_program(conn, settings)
        app.state.batcher = PostingBatcher(
            engine,
            app.state.program,
            settings,
            executors=settings.posting_executors,
            max_group=settings.posting_max_group,
        )
        program = app.state.program
        retention = settings.idempotency_retention_days
        periodic: list[tuple[str, float, Callable[[], Awaitable[int]]]] = [
            ("expired holds released", settings.hold_sweep_seconds, lambda: sweep(engine, program)),
            ("cards moved tier", settings.tier_review_seconds, lambda: review(engine, program)),
            (
                "cards' pending points released",
                settings.pending_release_seconds,
                lambda: release_run(engine, program),
            ),
            (
                "settlement statements made",
                settings.settlement_close_seconds,
                lambda: close_run(engine, program, settings),
            ),
            (
                "points expired",
                settings.expiry_run_seconds,
                lambda: expire(engine, program, settings),
            ),
            (
                "idempotency records purged",
                settings.idempotency_purge_seconds,
                lambda: purge(engine, program, retention),
            ),
        ]
        jobs = [
            asyncio.create_task(run_every(name, every, job))
            for name, every, job in periodic
            if every > 0
        ]
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await app.state.batcher.close()
            await engine.dispose()

    app = FastAPI(
        title="loyalty-ledger",
        version="1",
        summary="A double-entry ledger of loyalty points and cashback per card.",
        description=(
            "Amounts are integers: points are whole points; cashback and purchase amounts are "
            "minor units (cents) of the program currency. Errors are RFC 9457 "
            "`application/problem+json` with a stable `code`. Every POST that moves value "
            "needs an `Idempotency-Key` header."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.expected_revision = head_revision()
    install_error_handlers(app)
    if hot_routes:
        # Inside the body limit: HotRoutes reads bodies through it. Without it, the FastAPI
        # routes of app/ledger/router.py answer the same requests the same way.
        app.add_middleware(HotRoutes)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        per_path={"/v1/batches": settings.max_batch_body_bytes},
    )
    routers = (
        health_router,
        api_keys_router,
        partners_router,
        agreements_router,
        settlement_router,
        rules_router,
        cards_router,
        ledger_router,
        holds_router,
        batches_router,
        audit_router,
        reports_router,
    )
    for router in routers:
        app.include_router(router)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Add the Problem schema that every route's error responses refer to."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
