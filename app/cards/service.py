from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards import repository
from app.cards.errors import (
    CardClosed,
    CardNotFound,
    CardNumberTaken,
    CustomerReferenceMismatch,
    ReferrerNotFound,
)
from app.cards.numbers import generate_card_number
from app.cards.schemas import CardCreate, CardRead
from app.core.config import Settings
from app.core.errors import Forbidden
from app.models.enums import Asset, CardKind, CardStatus
from app.programs.service import ProgramContext
from app.rules import service as rules
from app.rules.schemas import CardTierRead

# Random 15-digit bodies collide rarely; a few tries make a collision practically impossible.
_GENERATION_ATTEMPTS = 5


def _read(row: Row[tuple[object, ...]], currency: str, tier: CardTierRead | None) -> CardRead:
    m = row._mapping
    return CardRead(
        card_number=m["card_number"],
        kind=m["kind"],
        status=m["status"],
        customer_reference=m["customer_reference"],
        birth_date=m["birth_date"],
        points=m["points"],
        cashback=m["cashback"],
        currency=currency,
        created_at=m["created_at"],
        closed_at=m["closed_at"],
        replaced_by=m["replaced_by"],
        referred_by=m["referred_by"],
        tier=tier,
    )


async def issue_card(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    principal: Principal,
    req: CardCreate,
) -> CardRead:
    if (req.kind == CardKind.PERSONALIZED) != (req.customer_reference is not None):
        raise CustomerReferenceMismatch()
    if req.birth_date is not None and req.kind != CardKind.PERSONALIZED:
        raise CustomerReferenceMismatch("A bearer card carries no customer data: no birth date.")
    if req.card_number is not None and not principal.is_operator:
        raise Forbidden("Only an operator key may choose a card number.")

    referrer = None
    if req.referred_by is not None:
        found = await repository.get(conn, program.id, req.referred_by)
        if found is None or found._mapping["status"] == CardStatus.CLOSED:
            raise ReferrerNotFound(f"No open card {req.referred_by} to refer this one.")
        referrer = int(str(found._mapping["id"]))
    card_id: int | None = None
    number = req.card_number
    for _ in range(1 if req.card_number else _GENERATION_ATTEMPTS):
        number = req.card_number or generate_card_number(
            settings.card_number_prefix, settings.card_number_length
        )
        card_id = await repository.insert(
            conn,
            program_id=program.id,
            card_number=number,
            kind=req.kind.value,
            customer_reference=req.customer_reference,
            birth_date=req.birth_date,
            partner_id=principal.partner_id,
            referred_by=referrer,
        )
        if card_id is not None:
            break
    if card_id is None or number is None:
        raise CardNumberTaken()
    await repository.insert_accounts(conn, program.id, card_id, [a.value for a in Asset])
    return await get_card(conn, program, number)


async def get_card(conn: AsyncConnection, program: ProgramContext, card_number: str) -> CardRead:
    row = await repository.get(conn, program.id, card_number)
    if row is None:
        raise CardNotFound()
    tier = await rules.card_tier(conn, program, int(str(row._mapping["id"])))
    return _read(row, program.currency, tier)


async def set_status(
    conn: AsyncConnection, program: ProgramContext, card_number: str, status: CardStatus
) -> CardRead:
    if not await repository.set_status(conn, program.id, card_number, status.value):
        card = await get_card(conn, program, card_number)  # 404 if there is no such card
        raise CardClosed(f"Card {card.card_number} is closed.")
    return await get_card(conn, program, card_number)
