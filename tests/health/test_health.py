"""Liveness and readiness."""

import asyncio

from alembic import command
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.db.engine import create_engine
from app.db.migrate import alembic_config, head_revision, upgrade
from app.main import create_app


async def test_health(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_the_migration_head(client: AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    head = head_revision()
    assert head is not None
    assert response.json() == {"status": "ready", "migration": head}


async def test_health_and_ready_need_no_key(client: AsyncClient) -> None:
    for path in ("/health", "/ready"):
        response = await client.get(path, headers={"Authorization": "Bearer llk_bogus"})
        assert response.status_code == 200, (path, response.text)


async def test_ready_is_503_when_the_database_is_behind(database_url: str) -> None:
    settings = Settings(database_url=database_url, _env_file=None)  # type: ignore[call-arg]
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            assert (await client.get("/ready")).status_code == 200

            # The lifespan needed the tables; take the schema away only now.
            config = alembic_config(database_url)
            await asyncio.to_thread(command.downgrade, config, "base")

            response = await client.get("/ready")
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["code"] == "not_ready"
            assert body["status"] == 503
            assert head_revision() in body["detail"]
            # Liveness does not depend on the database.
            health = await client.get("/health")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})

            await asyncio.to_thread(upgrade, database_url)
            response = await client.get("/ready")
            assert response.status_code == 200, response.text
            assert response.json()["migration"] == head_revision()


async def test_ready_is_503_when_the_database_is_unreachable(database_url: str) -> None:
    settings = Settings(database_url=database_url, _env_file=None)  # type: ignore[call-arg]
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        # Point the app at a database that does not exist.
        await application.state.engine.dispose()
        good_engine = application.state.engine
        missing = make_url(database_url).set(database="no_such_database_here")
        application.state.engine = create_engine(
            missing.render_as_string(hide_password=False), settings
        )
        try:
            transport = ASGITransport(app=application)
            async with AsyncClient(transport=transport, base_url="http://ledger.test") as client:
                response = await client.get("/ready")
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "not_ready"
            assert "unreachable" in response.json()["detail"]
        finally:
            await application.state.engine.dispose()
            application.state.engine = good_engine
