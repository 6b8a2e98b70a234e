from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from starlette.responses import Response

from app.auth.deps import CurrentPrincipal, OperatorPrincipal
from app.cards import service
from app.cards.errors import CardNotFound, CardNumberTaken, CustomerReferenceMismatch
from app.cards.schemas import CardCreate, CardRead
from app.core.deps import AppSettings
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import CardNumberInPath, problem_responses
from app.db.session import Conn
from app.idempotency import service as idempotency
from app.idempotency.deps import optional_idempotency_key
from app.idempotency.errors import IdempotencyKeyReused
from app.models.enums import CardStatus
from app.programs.deps import CurrentProgram

router = APIRouter(prefix="/v1/cards", tags=["cards"])

_AUTH = (Unauthorized, Forbidden)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="issue_card",
    response_model=CardRead,
    responses=problem_responses(
        *_AUTH, ValidationFailed, CustomerReferenceMismatch, CardNumberTaken, IdempotencyKeyReused
    ),
)
async def issue_card(
    body: CardCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    settings: AppSettings,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Depends(optional_idempotency_key)],
) -> Response:
    """Issue a card, bearer (anonymous) or personalized. A till may hand out cards with its
    partner key; only an operator key may supply the card number. Send an Idempotency-Key to
    make retries safe."""

    async def action() -> tuple[int, CardRead]:
        return 201, await service.issue_card(conn, program, settings, principal, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.get(
    "/{card_number}",
    operation_id="get_card",
    responses=problem_responses(*_AUTH, ValidationFailed, CardNotFound),
)
async def get_card(
    card_number: CardNumberInPath, conn: Conn, program: CurrentProgram, _: CurrentPrincipal
) -> CardRead:
    return await service.get_card(conn, program, card_number)


@router.post(
    "/{card_number}/block",
    operation_id="block_card",
    responses=problem_responses(*_AUTH, ValidationFailed, CardNotFound),
)
async def block_card(
    card_number: CardNumberInPath, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> CardRead:
    """Block a card (lost, fraud suspicion): it keeps its balances but can neither earn nor
    spend until unblocked. Operator only."""
    return await service.set_status(conn, program, card_number, CardStatus.BLOCKED)


@router.post(
    "/{card_number}/unblock",
    operation_id="unblock_card",
    responses=problem_responses(*_AUTH, ValidationFailed, CardNotFound),
)
async def unblock_card(
    card_number: CardNumberInPath, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> CardRead:
    return await service.set_status(conn, program, card_number, CardStatus.ACTIVE)
