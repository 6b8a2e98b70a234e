"""One error base class and the handlers that render RFC 9457 problem details.

Every error a client can see has a stable `code`; integrators switch on it, so codes never change
meaning. `type` is a relative URI built from the code.
"""

import logging
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.jsonio import dumps

PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger(__name__)


class AppError(Exception):
    """An expected failure with an HTTP status and a stable machine-readable code."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}
        # Whether this outcome may be stored as the answer to an Idempotency-Key. False when
        # the database transaction is already aborted and nothing more can be written.
        self.replayable = True

    def problem(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.title, self.detail, **self.extra)


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=dumps(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_JSON,
        headers=headers,
    )


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"
    title = "The request is not valid"


class MalformedJson(AppError):
    status = 400
    code = "malformed_json"
    title = "The request body is not valid JSON"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "No such resource"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    title = "A valid API key is required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="loyalty-ledger"'}


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    title = "This API key may not do that"


class AmountOutOfRange(AppError):
    status = 422
    code = "amount_out_of_range"
    title = "An amount or balance would leave the supported range"


class RetryLater(AppError):
    """The database chose this request as a deadlock or serialization victim.
    Nothing was written; the same request may be retried."""

    status = 503
    code = "retry_later"
    title = "Temporary conflict, retry the request"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": "1"}
        # Never an Idempotency-Key's answer: the retry must run afresh (and the database
        # transaction that would store it is usually aborted anyway).
        self.replayable = False


class InternalError(AppError):
    status = 500
    code = "internal_error"
    title = "Internal error"


# SQLSTATEs that mean "try again": serialization_failure, deadlock_detected.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
_OUT_OF_RANGE_SQLSTATES = {"22003"}


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state is None and orig is not None:
        state = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def _client_location(loc: list[str], body: Any) -> list[str]:
    """Pydantic names the chosen variant of a tagged union (`purchase`, `award`...) in an
    error's location, right where it enters the object; the client's JSON has no such level,
    so drop it. (Only there, and not when it is the last part and the object has a field of
    that name: then the field is at fault, named like the variant or like a `kind` the client
    made up.)"""
    if not loc or loc[0] != "body":
        return loc
    kept = [loc[0]]
    node = body
    entered = True  # just stepped into `node`
    parts = loc[1:]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if (
            entered
            and isinstance(node, dict)
            and part in (node.get("type"), node.get("kind"))
            and (part not in node or not last)
        ):
            entered = False
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = None
        entered = True
        kept.append(part)
    return kept


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = _client_location([str(part) for part in err.get("loc", ())], exc.body)
        kind = err.get("type", "")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            # A tagged union could not pick a variant: the tag field itself is at fault.
            loc = [*loc, str(err.get("ctx", {}).get("discriminator", "")).strip("'\"")]
        errors.append(
            {
                "location": loc[0] if loc else "body",
                "pointer": "/" + "/".join(loc[1:]),
                "message": err.get("msg", ""),
                "type": kind,
            }
        )
    return errors


def _database_problem(exc: Exception, state: str | None) -> Response:
    if state in _RETRYABLE_SQLSTATES:
        err: AppError = RetryLater()
    elif state in _OUT_OF_RANGE_SQLSTATES:
        err = AmountOutOfRange()
    else:
        logger.error("database error", exc_info=exc)
        err = InternalError()
    return problem_response(err.problem(), err.headers)


def validation_problem(exc: RequestValidationError) -> Response:
    errors = _validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(MalformedJson().problem())
    detail = "; ".join(f"{e['location']}{e['pointer']}: {e['message']}" for e in errors)
    return problem_response(ValidationFailed(detail, errors=errors).problem())


def http_problem(exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        return problem_response(NotFound().problem())
    if exc.status_code == 413:
        return problem_response(PayloadTooLarge(str(exc.detail)).problem())
    if exc.status_code == 400:
        # FastAPI's own "error parsing the body": bad UTF-8, nesting or number too deep.
        return problem_response(MalformedJson().problem())
    if exc.status_code == 405:
        return problem_response(MethodNotAllowed().problem())
    body = problem_body(exc.status_code, "http_error", str(exc.detail), str(exc.detail))
    return problem_response(body, dict(exc.headers or {}))


def unexpected_problem(exc: Exception) -> Response:
    """What the handlers below answer, for code that runs outside FastAPI's routing."""
    if isinstance(exc, AppError):
        return problem_response(exc.problem(), exc.headers)
    if isinstance(exc, StarletteHTTPException):
        return http_problem(exc)
    if isinstance(exc, DBAPIError):
        return _database_problem(exc, _sqlstate(exc))
    if isinstance(exc, asyncpg.PostgresError):
        return _database_problem(exc, getattr(exc, "sqlstate", None))
    logger.error("unhandled error", exc_info=exc)
    return problem_response(InternalError().problem())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def handle_app_error(request: Request, exc: AppError) -> Response:
        return problem_response(exc.problem(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> Response:
        return http_problem(exc)

    @app.exception_handler(DBAPIError)
    async def handle_db(request: Request, exc: DBAPIError) -> Response:
        return _database_problem(exc, _sqlstate(exc))

    @app.exception_handler(asyncpg.PostgresError)
    async def handle_asyncpg(request: Request, exc: asyncpg.PostgresError) -> Response:
        # The posting engine talks to asyncpg directly (app/ledger/engine.py).
        return _database_problem(exc, getattr(exc, "sqlstate", None))

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return problem_response(InternalError().problem())
