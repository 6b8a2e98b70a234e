from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.auth.deps import Credentials, CurrentPrincipal, bearer_token
from app.auth.keys import hash_key
from app.batches import service
from app.batches.errors import BatchRefused
from app.batches.schemas import BatchCreate, BatchRead
from app.core.deps import AppSettings
from app.core.errors import (
    MalformedJson,
    PayloadTooLarge,
    RetryLater,
    Unauthorized,
    ValidationFailed,
)
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.idempotency import service as idempotency
from app.idempotency.deps import require_idempotency_key
from app.idempotency.errors import IdempotencyKeyRequired, IdempotencyKeyReused
from app.programs.deps import CurrentProgram

router = APIRouter(tags=["batches"])


@router.post(
    "/v1/batches",
    operation_id="create_batch",
    response_model=BatchRead,
    responses=problem_responses(
        Unauthorized,
        ValidationFailed,
        MalformedJson,
        PayloadTooLarge,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        RetryLater,
        BatchRefused,
    ),
)
async def create_batch(
    body: BatchCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    settings: AppSettings,
    principal: CurrentPrincipal,
    credentials: Credentials,
    idempotency_key: Annotated[str, Depends(require_idempotency_key)],
) -> Response:
    """Up to 1,000 purchases, awards and redemptions in one request: an offline till uploading
    its day, a web shop importing orders. Items are applied in order, each with its own result
    (the answer the single endpoint would give, or its problem); one item's refusal does not
    undo the others unless `atomic` is set. The whole batch is idempotent under its
    Idempotency-Key, and each item's reference still posts only once across batches."""
    key_hash = hash_key(bearer_token(credentials))

    async def action() -> tuple[int, dict[str, Any]]:
        return await service.post_batch(conn, program, settings, key_hash, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )
