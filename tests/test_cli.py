"""The `loyalty-ledger api-keys` commands, against the test database."""

import asyncio
import re
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from tests.factories.api_keys import bearer
from tests.factories.partners import create_partner


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run(database_url: str, *args: str) -> tuple[int, str]:
    runner = CliRunner()

    def invoke() -> tuple[int, str]:
        # The CLI runs asyncio.run itself: it needs a thread without a running loop.
        result = runner.invoke(
            cli, list(args), env={"DATABASE_URL": database_url}, catch_exceptions=False
        )
        return result.exit_code, result.output

    try:
        return await asyncio.to_thread(invoke)
    finally:
        get_settings.cache_clear()


def parse_created(output: str) -> tuple[str, str]:
    match = re.search(r"^id:\s+(\S+)\s*$\n^key:\s+(\S+)\s*$", output, re.MULTILINE)
    assert match, output
    uuid.UUID(match.group(1))
    return match.group(1), match.group(2)


async def test_create_list_revoke_operator_key(
    database_url: str, app: FastAPI, client: AsyncClient, engine: AsyncEngine
) -> None:
    code, output = await run(
        database_url, "api-keys", "create", "--name", "ops laptop", "--role", "operator"
    )
    assert code == 0, output
    key_id, secret = parse_created(output)
    assert secret.startswith("llk_")

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT name, role, partner_id, key_prefix, revoked_at FROM api_keys "
                    "WHERE id = :id"
                ),
                {"id": uuid.UUID(key_id)},
            )
        ).one()
    assert tuple(row) == ("ops laptop", "operator", None, secret[:12], None)

    # The key works against the service, as an operator.
    response = await client.get("/v1/api-keys", headers=bearer(secret))
    assert response.status_code == 200, response.text
    assert [k["id"] for k in response.json()] == [key_id]

    code, output = await run(database_url, "api-keys", "list")
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith(key_id)
    assert secret[:12] in lines[0]
    assert secret not in output
    assert "operator" in lines[0]
    assert "active" in lines[0]
    assert "ops laptop" in lines[0]

    code, output = await run(database_url, "api-keys", "revoke", key_id)
    assert code == 0, output
    assert output.startswith(f"revoked {key_id} at ")

    response = await client.get("/v1/api-keys", headers=bearer(secret))
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"

    code, output = await run(database_url, "api-keys", "list")
    assert code == 0, output
    assert "revoked" in output
    assert "active" not in output


async def test_create_partner_key(
    database_url: str, app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner = await create_partner(client, operator)
    code, output = await run(
        database_url,
        "api-keys",
        "create",
        "--name",
        "till 1",
        "--role",
        "partner",
        "--partner-id",
        partner["id"],
    )
    assert code == 0, output
    key_id, secret = parse_created(output)

    # A partner key: it may issue cards but not act as the operator.
    response = await client.post("/v1/cards", json={}, headers=bearer(secret))
    assert response.status_code == 201, response.text
    response = await client.get("/v1/api-keys", headers=bearer(secret))
    assert response.status_code == 403
    listing = (await client.get("/v1/api-keys", headers=operator)).json()
    mine = next(k for k in listing if k["id"] == key_id)
    assert (mine["role"], mine["partner_id"], mine["name"]) == ("partner", partner["id"], "till 1")

    code, output = await run(database_url, "api-keys", "list")
    assert f"partner={partner['id']}" in output
