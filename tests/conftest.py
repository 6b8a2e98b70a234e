"""Test fixtures: real PostgreSQL, schema built by Alembic, a fresh database per test.

The cluster is an embedded throwaway one unless TEST_DATABASE_URL names a server. Alembic
migrates a template database once per session; each test gets `CREATE DATABASE ... TEMPLATE`,
a byte copy that takes a fraction of a second, with every trigger and CHECK in place. Tests
therefore commit for real (races need real commits on separate connections) and still start
from an empty ledger, so their assertions can be exact.
"""

import asyncio
import itertools
import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.config import Settings
from app.db.migrate import upgrade
from app.db.urls import async_url
from app.main import create_app
from tests.factories.api_keys import insert_api_key

_db_counter = itertools.count()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def cluster_url() -> Any:
    """URL of a maintenance database on the test cluster."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from app.db.embedded import start_embedded

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data_dir = Path(tempfile.mkdtemp(prefix="loyalty-ledger-test-")) / "pg"
        server, url = start_embedded(data_dir, throwaway=True)
    yield url
    server.cleanup()


async def _admin(cluster_url: str, *statements: str) -> None:
    engine = create_async_engine(async_url(cluster_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def template_db(cluster_url: str) -> AsyncIterator[str]:
    name = f"ll_template_{os.getpid()}"
    await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    # Alembic runs its own event loop: give it a thread.
    await asyncio.to_thread(upgrade, _with_database(cluster_url, name))
    yield name
    await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(cluster_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"ll_test_{os.getpid()}_{next(_db_counter)}"
    await _admin(cluster_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_database(cluster_url, name)
    await _admin(cluster_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    # No background jobs (hold sweep, tier review): tests run them explicitly.
    return Settings(  # type: ignore[call-arg]
        database_url=database_url,
        program_currency="EUR",
        hold_sweep_seconds=0,
        tier_review_seconds=0,
        idempotency_purge_seconds=0,
        expiry_run_seconds=0,
        pending_release_seconds=0,
        settlement_close_seconds=0,
        _env_file=None,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def engine(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.engine
    return engine


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://ledger.test") as c:
        yield c


@pytest.fixture
async def operator_key(app: FastAPI) -> str:
    return await insert_api_key(app, role="operator")


@pytest.fixture
def operator(operator_key: str) -> dict[str, str]:
    """Headers of an operator request."""
    return {"Authorization": f"Bearer {operator_key}"}


def idem() -> dict[str, str]:
    """A fresh Idempotency-Key header."""
    return {"Idempotency-Key": str(uuid.uuid4())}
