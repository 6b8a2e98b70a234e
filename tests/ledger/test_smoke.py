from httpx import AsyncClient

from tests.conftest import idem
from tests.factories.cards import funded_card


async def test_award_then_redeem(client: AsyncClient, operator: dict[str, str]) -> None:
    card = await funded_card(client, operator, 100)
    r = await client.post(
        "/v1/redemptions",
        json={"card_number": card["card_number"], "asset": "points", "amount": 30, "reference": "x"},
        headers={**operator, **idem()},
    )
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": 70, "cashback": 0}
