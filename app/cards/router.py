from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from starlette.responses import Response

from app.auth.deps import CurrentPrincipal, OperatorPrincipal
from app.cards import lifecycle, service
from app.cards.errors import (
    CardClosed,
    CardHasBalance,
    CardNotFound,
    CardNumberTaken,
    CustomerReferenceMismatch,
    NotSameCustomer,
    ReferrerNotFound,
    SameCard,
)
from app.cards.schemas import CardCreate, CardMerge, CardMerged, CardRead, CardReplace, CardReplaced
from app.core.deps import AppSettings
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import CardNumberInPath, problem_responses
from app.db.session import Conn
from app.idempotency import service as idempotency
from app.idempotency.deps import optional_idempotency_key, require_idempotency_key
from app.idempotency.errors import IdempotencyKeyRequired, IdempotencyKeyReused
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
        *_AUTH,
        ValidationFailed,
        CustomerReferenceMismatch,
        ReferrerNotFound,
        CardNumberTaken,
        IdempotencyKeyReused,
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


_LIFE = (Unauthorized, Forbidden, ValidationFailed, CardNotFound, CardClosed)


@router.post(
    "/{card_number}/replace",
    status_code=status.HTTP_201_CREATED,
    operation_id="replace_card",
    response_model=CardReplaced,
    responses=problem_responses(
        *_LIFE, CardNumberTaken, IdempotencyKeyRequired, IdempotencyKeyReused
    ),
)
async def replace_card(
    card_number: CardNumberInPath,
    body: CardReplace,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    settings: AppSettings,
    principal: OperatorPrincipal,
    idempotency_key: Annotated[str, Depends(require_idempotency_key)],
) -> Response:
    """A lost or damaged card: a new card of the same kind and customer takes its balances in
    one transaction; the old card is closed and points to the new one. History stays readable
    from both. Operator only."""

    async def action() -> tuple[int, CardReplaced]:
        return await lifecycle.replace(conn, program, settings, principal, card_number, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/{card_number}/merge",
    operation_id="merge_card",
    response_model=CardMerged,
    responses=problem_responses(
        *_LIFE, SameCard, NotSameCustomer, IdempotencyKeyRequired, IdempotencyKeyReused
    ),
)
async def merge_card(
    card_number: CardNumberInPath,
    body: CardMerge,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
    idempotency_key: Annotated[str, Depends(require_idempotency_key)],
) -> Response:
    """Merge this card into another card of the same customer (both personalized, same
    customer reference): its balances move over and it is closed. Operator only."""

    async def action() -> tuple[int, CardMerged]:
        return await lifecycle.merge(conn, program, principal, card_number, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/{card_number}/close",
    operation_id="close_card",
    responses=problem_responses(*_LIFE, CardHasBalance),
)
async def close_card(
    card_number: CardNumberInPath, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> CardRead:
    """Close an empty card for good (transfer or spend its value first). Operator only."""
    return await lifecycle.close(conn, program, card_number)
