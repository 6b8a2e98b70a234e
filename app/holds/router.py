import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.auth.deps import CurrentPrincipal
from app.cards.errors import CardBlocked, CardClosed, CardNotFound
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.holds import service
from app.holds.errors import CaptureExceedsHold, HoldExpired, HoldNotFound, HoldNotOpen
from app.holds.schemas import HoldAnswer, HoldCapture, HoldCreate, HoldRead, HoldVoid
from app.idempotency import service as idempotency
from app.idempotency.deps import IdempotencyKey
from app.idempotency.errors import IdempotencyKeyRequired, IdempotencyKeyReused
from app.ledger.errors import DuplicateReference, InsufficientBalance, PartnerCannotRedeem
from app.partners.errors import PartnerNotFound
from app.programs.deps import CurrentProgram

router = APIRouter(tags=["holds"])

_KEYED = (Unauthorized, ValidationFailed, IdempotencyKeyRequired, IdempotencyKeyReused)
_SETTLE = (*_KEYED, HoldNotFound, HoldNotOpen, HoldExpired)


@router.post(
    "/v1/holds",
    status_code=201,
    operation_id="create_hold",
    response_model=HoldAnswer,
    responses=problem_responses(
        *_KEYED,
        Forbidden,
        CardNotFound,
        CardBlocked,
        CardClosed,
        PartnerNotFound,
        PartnerCannotRedeem,
        DuplicateReference,
        InsufficientBalance,
    ),
)
async def create_hold(
    body: HoldCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Reserve points or cashback on a card for an order (a web checkout before payment).
    What is held is not available for anything else until the hold is captured, voided, or
    its time to live runs out. One hold per order reference and partner."""

    async def action() -> tuple[int, HoldAnswer]:
        return await service.create(conn, program, principal, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.get(
    "/v1/holds/{hold_id}",
    operation_id="get_hold",
    response_model=HoldRead,
    responses=problem_responses(Unauthorized, ValidationFailed, HoldNotFound),
)
async def get_hold(
    hold_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> HoldRead:
    """A hold and its state. A partner key sees its own partner's holds only."""
    return await service.get(conn, program, principal, hold_id)


@router.post(
    "/v1/holds/{hold_id}/capture",
    operation_id="capture_hold",
    response_model=HoldAnswer,
    responses=problem_responses(*_SETTLE, CaptureExceedsHold),
)
async def capture_hold(
    hold_id: uuid.UUID,
    body: HoldCapture,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Spend all or part of what the hold reserved, at the hold's partner; the rest goes back
    to the card. Refused once the hold expired, or was captured or voided (`hold_not_open`:
    of a capture and a void racing, exactly one wins)."""

    async def action() -> tuple[int, HoldAnswer]:
        return await service.capture(conn, program, principal, hold_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/v1/holds/{hold_id}/void",
    operation_id="void_hold",
    response_model=HoldAnswer,
    responses=problem_responses(*_SETTLE),
)
async def void_hold(
    hold_id: uuid.UUID,
    body: HoldVoid,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Release everything the hold reserved back to the card (the order was abandoned)."""

    async def action() -> tuple[int, HoldAnswer]:
        return await service.void(conn, program, principal, hold_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )
