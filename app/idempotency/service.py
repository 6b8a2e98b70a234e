"""Run a request once per Idempotency-Key, and replay its first answer to every retry.

The key is claimed in the request's own database transaction, before anything else is written.
The answer is stored in that same transaction, so either both the posting and its answer
commit, or neither does and a retry runs afresh. Refusals (insufficient balance, unknown card)
are answers too: they are stored, so a retry never flips an outcome.
"""

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from app.core.errors import PROBLEM_JSON, AppError
from app.core.jsonio import dumps
from app.idempotency import repository
from app.idempotency.errors import IdempotencyKeyReused

REPLAYED_HEADER = "Idempotent-Replayed"

Action = Callable[[], Awaitable[tuple[int, BaseModel | dict[str, Any]]]]


def request_fingerprint(method: str, path: str, body: BaseModel) -> bytes:
    """Canonical: key order and whitespace of the JSON sent do not matter; values do."""
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).digest()


def answer_response(
    status: int, body: bytes, replayed: bool, headers: dict[str, str] | None = None
) -> Response:
    headers = {**(headers or {}), **({REPLAYED_HEADER: "true"} if replayed else {})}
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(content=body, status_code=status, media_type=media, headers=headers)


def _render(answer: BaseModel | dict[str, Any]) -> bytes:
    return dumps(answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer)


async def run_once(
    conn: AsyncConnection,
    *,
    api_key_id: uuid.UUID,
    key: str | None,
    fingerprint: bytes,
    action: Action,
) -> Response:
    if key is None:
        status, model = await action()
        return answer_response(status, _render(model), replayed=False)

    if not await repository.claim(conn, api_key_id, key, fingerprint):
        record = await repository.fetch(conn, api_key_id, key)
        if record is None or record.response_status is None:
            # Cannot happen: a claim is only visible once its transaction committed its answer.
            raise RuntimeError("idempotency record without an answer")
        if record.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                "The same Idempotency-Key was sent before with a different body or path; "
                "use a new key for a new request."
            )
        return answer_response(record.response_status, record.response_body, replayed=True)

    body: bytes
    try:
        status, model = await action()
        body = _render(model)
    except AppError as exc:
        if not exc.replayable:
            raise
        status, body = exc.status, dumps(_problem(exc))
    await repository.store(conn, api_key_id, key, status, body)
    return answer_response(status, body, replayed=False)


def _problem(exc: AppError) -> dict[str, Any]:
    return exc.problem()


async def respond_once(
    request: Request,
    conn: AsyncConnection,
    api_key_id: uuid.UUID,
    key: str | None,
    body: BaseModel,
    action: Action,
) -> Response:
    """`run_once` for a route: the fingerprint is the request's method, path and body."""
    return await run_once(
        conn,
        api_key_id=api_key_id,
        key=key,
        fingerprint=request_fingerprint(request.method, request.scope["path"], body),
        action=action,
    )
