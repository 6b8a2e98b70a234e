"""The three hottest routes, served beneath FastAPI: `POST /v1/accruals`,
`POST /v1/redemptions` and `GET /v1/cards/{card_number}/balance`.

A till calls these on every sale. Profiles showed two thirds of a worker's time for a posting
in FastAPI's per-request machinery (middleware, routing, dependency solving), against one fifth
in the ledger itself. This ASGI middleware answers those three routes directly with the same
models, the same checks in the same order, and the same answers; every other request goes on
to FastAPI. The FastAPI routes in app/ledger/router.py still declare these operations for the
OpenAPI document, and answer identically if this middleware is not installed.

Order of checks, as FastAPI's: unreadable JSON (400), a missing Idempotency-Key (400), header
and body validation (422, validated as FastAPI does: `from_attributes=True`), then the API key
(401) and the posting itself. tests/ledger/test_hot_routes.py sends the same requests to an
app with and without this middleware and compares the answers.
"""

import email.message
import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import Unauthorized, unexpected_problem, validation_problem
from app.core.schemas import CardNumber
from app.idempotency import service as idempotency
from app.idempotency.deps import IDEMPOTENCY_KEY_CONSTRAINTS
from app.idempotency.errors import IdempotencyKeyRequired
from app.ledger import service
from app.ledger.schemas import AccrualCreate, RedemptionCreate

_BODIES: dict[str, TypeAdapter[Any]] = {
    "/v1/accruals": TypeAdapter(AccrualCreate),
    "/v1/redemptions": TypeAdapter(RedemptionCreate),
}
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IDEMPOTENCY_KEY_CONSTRAINTS)
_CARD_NUMBER: TypeAdapter[str] = TypeAdapter(CardNumber)
_BALANCE_PREFIX, _BALANCE_SUFFIX = "/v1/cards/", "/balance"


class _Unreadable(Exception):
    pass


class HotRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path in _BODIES:
                await self._answer(self._post(scope, receive, path), scope, receive, send)
                return
            if (
                method == "GET"
                and path.startswith(_BALANCE_PREFIX)
                and path.endswith(_BALANCE_SUFFIX)
            ):
                card_number = path[len(_BALANCE_PREFIX) : -len(_BALANCE_SUFFIX)]
                if card_number and "/" not in card_number:
                    await self._answer(self._balance(scope, card_number), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, work: Any, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await work
        except Exception as exc:  # rendered exactly as FastAPI's handlers would
            response = unexpected_problem(exc)
        await response(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, path: str) -> Any:
        headers = Headers(scope=scope)
        try:
            body = _parse_json(headers, await _read_body(receive))
        except _Unreadable:
            return validation_problem(
                RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": ""}])
            )
        key = headers.get("idempotency-key")
        if key is None:
            raise IdempotencyKeyRequired()
        errors: list[dict[str, Any]] = []
        try:
            _IDEMPOTENCY_KEY.validate_python(key, from_attributes=True)
        except ValidationError as exc:
            errors += _located(exc, ("header", "Idempotency-Key"))
        if body is None:
            errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
        else:
            try:
                request = _BODIES[path].validate_python(body, from_attributes=True)
            except ValidationError as exc:
                errors += _located(exc, ("body",))
        if errors:
            return validation_problem(RequestValidationError(errors, body=body))
        app = scope["app"]
        outcome = await service.post_one(
            app.state.batcher,
            request,
            api_key=_bearer(headers),
            idempotency_key=key,
            fingerprint=idempotency.request_fingerprint("POST", path, request),
        )
        return idempotency.answer_response(
            outcome.status, outcome.body, outcome.replayed, outcome.headers
        )

    async def _balance(self, scope: Scope, card_number: str) -> Any:
        try:
            _CARD_NUMBER.validate_python(card_number, from_attributes=True)
        except ValidationError as exc:
            errors = _located(exc, ("path", "card_number"))
            return validation_problem(RequestValidationError(errors))
        app = scope["app"]
        answer = await service.balance_for_key(
            app.state.engine, app.state.program, _bearer(Headers(scope=scope)), card_number
        )
        return service.json_response(answer)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_json(headers: Headers, raw: bytes) -> Any:
    """What FastAPI makes of a body: JSON when the content type says so, else the raw bytes
    (which then fail validation), and None when there is no body."""
    if not raw:
        return None
    content_type = headers.get("content-type")
    if content_type != "application/json":
        if not content_type:
            return raw
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if message.get_content_maintype() != "application" or not (
            subtype == "json" or subtype.endswith("+json")
        ):
            return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, too deep, too long
        raise _Unreadable from exc


def _located(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**err, "loc": (*prefix, *err["loc"])} for err in exc.errors()]


def _bearer(headers: Headers) -> str:
    """As fastapi.security.HTTPBearer reads `Authorization: Bearer <key>`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme and credentials and scheme.lower() == "bearer":
            return credentials
    raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
