import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.auth.deps import CurrentPrincipal, OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.idempotency import service as idempotency
from app.idempotency.deps import IdempotencyKey
from app.idempotency.errors import IdempotencyKeyRequired, IdempotencyKeyReused
from app.partners.errors import PartnerNotFound
from app.programs.deps import CurrentProgram
from app.settlement import service
from app.settlement.csv_export import statement_csv
from app.settlement.errors import (
    PaymentReferenceTaken,
    StatementNotFound,
    StatementOfAnotherPartner,
)
from app.settlement.schemas import (
    CloseRead,
    CloseRequest,
    PaymentCreate,
    PaymentRead,
    PositionRead,
    StatementRead,
)

router = APIRouter(tags=["settlement"])
_AUTH = (Unauthorized, Forbidden)


@router.post(
    "/v1/settlements/close",
    operation_id="close_settlement_periods",
    response_model=CloseRead,
    responses=problem_responses(
        *_AUTH, ValidationFailed, IdempotencyKeyRequired, IdempotencyKeyReused
    ),
)
async def close_periods(
    body: CloseRequest,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Close every settlement period that has ended and is not closed yet: one immutable
    statement per partner with anything to settle, each posted to the ledger. Closing again
    closes nothing new. Operator only."""

    async def action() -> tuple[int, CloseRead]:
        settings = request.app.state.settings
        return 200, await service.close(conn, program, settings, principal.api_key_id, body.through)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.get(
    "/v1/statements",
    operation_id="list_statements",
    responses=problem_responses(*_AUTH, ValidationFailed),
)
async def list_statements(
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    partner_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StatementRead]:
    """Statements, newest period first, without their lines. A partner key sees its own only."""
    return await service.statements(conn, program, principal, partner_id, limit)


@router.get(
    "/v1/statements/{statement_id}",
    operation_id="get_statement",
    responses=problem_responses(*_AUTH, StatementNotFound),
)
async def get_statement(
    statement_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> StatementRead:
    """One statement with its lines. Another partner's is not found for a partner key."""
    return await service.statement(conn, program, principal, statement_id)


@router.get(
    "/v1/statements/{statement_id}/csv",
    operation_id="download_statement",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "The statement as CSV."},
        **problem_responses(*_AUTH, StatementNotFound),
    },
)
async def download_statement(
    statement_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> Response:
    """The statement as CSV (the header block, then its lines)."""
    read = await service.statement(conn, program, principal, statement_id)
    name = f"statement-{read.partner_code}-{read.period_start.date().isoformat()}.csv"
    return Response(
        statement_csv(read),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/v1/partners/{partner_id}/settlement",
    operation_id="get_partner_position",
    responses=problem_responses(*_AUTH, PartnerNotFound),
)
async def get_partner_position(
    partner_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> PositionRead:
    """What the partner owes the operator, or is owed, now: its statements less payments."""
    return await service.position(conn, program, principal, partner_id)


@router.post(
    "/v1/partners/{partner_id}/payments",
    status_code=201,
    operation_id="record_payment",
    response_model=PaymentRead,
    responses=problem_responses(
        *_AUTH,
        ValidationFailed,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        PartnerNotFound,
        StatementNotFound,
        StatementOfAnotherPartner,
        PaymentReferenceTaken,
    ),
)
async def record_payment(
    partner_id: uuid.UUID,
    body: PaymentCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Money received from the partner or sent to it, posted against its settlement account
    (and a statement, if named). Operator only."""

    async def action() -> tuple[int, PaymentRead]:
        return await service.record_payment(conn, program, principal, partner_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )
