"""A 2xx means the write is durable: the commit happens before the response is sent, and a
commit that fails answers an error and leaves nothing behind."""

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card

# A deferred trigger that refuses, at COMMIT time only, transactions with this reference: the
# request's statements all succeed, and only the final commit fails.
FAIL_AT_COMMIT = [
    """
    CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.reference = 'FAIL-AT-COMMIT' THEN
            RAISE EXCEPTION 'refused at commit';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON transactions
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_at_commit()
    """,
]


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions),"
                    " (SELECT count(*) FROM entries),"
                    " (SELECT count(*) FROM idempotency_keys)"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def test_failed_commit_never_answers_2xx(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 100)
    async with engine.begin() as conn:
        for statement in FAIL_AT_COMMIT:
            await conn.execute(text(statement))
    before = await _counts(engine)
    key = idem()

    body = {
        "card_number": card["card_number"],
        "asset": "points",
        "amount": 40,
        "reference": "FAIL-AT-COMMIT",
    }
    response = await client.post("/v1/redemptions", json=body, headers={**operator, **key})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal_error"
    assert await _counts(engine) == before
    balance = await client.get(f"/v1/cards/{card['card_number']}/balance", headers=operator)
    assert balance.json()["points"] == 100

    # The key was not consumed: once the cause is gone, the same retry goes through.
    async with engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER test_fail_at_commit ON transactions"))
    retry = await client.post("/v1/redemptions", json=body, headers={**operator, **key})
    assert retry.status_code == 201, retry.text
    assert retry.json()["balance"]["points"] == 60
