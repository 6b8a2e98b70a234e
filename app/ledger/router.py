import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from app.auth.deps import Credentials, CurrentPrincipal, OperatorPrincipal, bearer_token
from app.cards import lifecycle
from app.cards.errors import CardBlocked, CardClosed, CardNotFound, SameCard
from app.core.errors import (
    AmountOutOfRange,
    Forbidden,
    MalformedJson,
    PayloadTooLarge,
    RetryLater,
    Unauthorized,
    ValidationFailed,
)
from app.core.schemas import CardNumberInPath, problem_responses
from app.db.session import Conn
from app.idempotency import service as idempotency
from app.idempotency.deps import IdempotencyKey
from app.idempotency.errors import IdempotencyKeyRequired, IdempotencyKeyReused
from app.ledger import refunds, returns, reversals, service
from app.ledger.errors import (
    AlreadyRefunded,
    AlreadyReversed,
    CurrencyMismatch,
    DuplicateReference,
    InsufficientBalance,
    InvalidCursor,
    NotAPurchase,
    NotARedemption,
    NotReversible,
    OccurredAtOutOfRange,
    PartnerCannotEarn,
    PartnerCannotRedeem,
    PartnerRequired,
    RefundExceedsOriginal,
    TransactionNotFound,
)
from app.ledger.rules import PostingRequest
from app.ledger.schemas import (
    AccrualCreate,
    AccrualPreviewCreate,
    AccrualPreviewRead,
    AccrualRead,
    BalanceRead,
    CardTransactionPage,
    PurchaseReturnCreate,
    PurchaseReturnRead,
    RedemptionCreate,
    RedemptionRead,
    RefundCreate,
    RefundRead,
    ReversalCreate,
    ReversalRead,
    TransactionRead,
    TransferCreate,
    TransferRead,
)
from app.partners.errors import PartnerNotFound
from app.programs.deps import CurrentProgram

router = APIRouter(tags=["ledger"])


_COMMON = (
    Unauthorized,
    Forbidden,
    ValidationFailed,
    MalformedJson,
    PayloadTooLarge,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    AmountOutOfRange,
    RetryLater,
    CardNotFound,
    CardBlocked,
    PartnerNotFound,
    DuplicateReference,
    OccurredAtOutOfRange,
)


@router.post(
    "/v1/accruals",
    status_code=201,
    operation_id="create_accrual",
    response_model=AccrualRead,
    responses={
        200: {"description": "The purchase earned nothing; nothing was posted."},
        **problem_responses(*_COMMON, CurrencyMismatch, PartnerRequired, PartnerCannotEarn),
    },
)
async def create_accrual(
    body: Annotated[AccrualCreate, Body()],
    request: Request,
    credentials: Credentials,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Earn: a purchase at a partner (`kind: purchase`) earns points and cashback by the
    partner's rates; an operator award (`kind: award`) credits points. The answer says what was
    earned and the card's new balances. Retries with the same Idempotency-Key get the first
    answer."""
    return await _post(request, credentials, idempotency_key, body)


@router.post(
    "/v1/accruals/preview",
    operation_id="preview_accrual",
    response_model=AccrualPreviewRead,
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        ValidationFailed,
        MalformedJson,
        PayloadTooLarge,
        RetryLater,
        CardNotFound,
        CardBlocked,
        CardClosed,
        PartnerNotFound,
        OccurredAtOutOfRange,
        CurrencyMismatch,
        PartnerRequired,
        PartnerCannotEarn,
    ),
)
async def preview_accrual(
    body: AccrualPreviewCreate, request: Request, credentials: Credentials
) -> Response | AccrualPreviewRead:
    """What a purchase would earn if posted now, rule by rule, without posting it (a till
    shows it before payment). The same rules as `POST /v1/accruals`; nothing is written, so no
    Idempotency-Key is needed."""
    app = request.app
    return await service.preview(
        app.state.engine, app.state.program, app.state.settings, bearer_token(credentials), body
    )


@router.post(
    "/v1/redemptions",
    status_code=201,
    operation_id="create_redemption",
    response_model=RedemptionRead,
    responses=problem_responses(*_COMMON, InsufficientBalance, PartnerCannotRedeem),
)
async def create_redemption(
    body: RedemptionCreate,
    request: Request,
    credentials: Credentials,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Spend points or cashback from a card. Refused with `insufficient_balance` when the card
    holds less, however many tills try at once; a retry of a refusal stays refused."""
    return await _post(request, credentials, idempotency_key, body)


async def _post(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    idempotency_key: str,
    body: PostingRequest,
) -> Response:
    outcome = await service.post_one(
        request.app.state.batcher,
        body,
        api_key=bearer_token(credentials),
        idempotency_key=idempotency_key,
        fingerprint=idempotency.request_fingerprint("POST", request.scope["path"], body),
    )
    return idempotency.answer_response(
        outcome.status, outcome.body, outcome.replayed, outcome.headers
    )


@router.get(
    "/v1/cards/{card_number}/balance",
    operation_id="get_card_balance",
    response_model=BalanceRead,
    responses=problem_responses(Unauthorized, ValidationFailed, CardNotFound),
)
async def get_card_balance(
    card_number: CardNumberInPath,
    request: Request,
    program: CurrentProgram,
    credentials: Credentials,
) -> Response:
    """What the card holds now. Any key may ask: a till checks before every sale."""
    answer = await service.balance_for_key(
        request.app.state.engine, program, bearer_token(credentials), card_number
    )
    return service.json_response(answer)


@router.get(
    "/v1/cards/{card_number}/transactions",
    operation_id="list_card_transactions",
    responses=problem_responses(Unauthorized, ValidationFailed, CardNotFound, InvalidCursor),
)
async def list_card_transactions(
    card_number: CardNumberInPath,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CardTransactionPage:
    """The card's history, newest first. A partner key sees only its own transactions."""
    return await service.card_history(conn, program, principal, card_number, cursor, limit)


@router.get(
    "/v1/transactions/{transaction_id}",
    operation_id="get_transaction",
    responses=problem_responses(Unauthorized, ValidationFailed, TransactionNotFound),
)
async def get_transaction(
    transaction_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> TransactionRead:
    """A transaction with all its entries. Partner keys see only their own."""
    return await service.get_transaction(conn, program, principal, transaction_id)


@router.post(
    "/v1/transfers",
    status_code=201,
    operation_id="create_transfer",
    response_model=TransferRead,
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        ValidationFailed,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        CardNotFound,
        CardClosed,
        SameCard,
        InsufficientBalance,
        DuplicateReference,
    ),
)
async def create_transfer(
    body: TransferCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Move points or cashback from one card to another (a gift, a correction between a
    customer's cards). Operator only."""

    async def action() -> tuple[int, TransferRead]:
        return await lifecycle.transfer(conn, program, principal, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/v1/transactions/{transaction_id}/reversal",
    status_code=201,
    operation_id="reverse_transaction",
    response_model=ReversalRead,
    responses=problem_responses(
        Unauthorized,
        ValidationFailed,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        TransactionNotFound,
        NotReversible,
        AlreadyReversed,
        AlreadyRefunded,
        CardClosed,
    ),
)
async def reverse_transaction(
    transaction_id: uuid.UUID,
    body: ReversalCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Cancel a posting in full, once: a new transaction with the original's entries negated.
    A partner key reverses its own partner's postings only. Reversing an accrual the card has
    spent since is a clawback: the balance goes below zero (a debt that later earnings pay
    off). A partly refunded or returned transaction is refused (`already_refunded`)."""

    async def action() -> tuple[int, ReversalRead]:
        return await reversals.reverse(conn, program, principal, transaction_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/v1/redemptions/{redemption_id}/refunds",
    status_code=201,
    operation_id="refund_redemption",
    response_model=RefundRead,
    responses=problem_responses(
        Unauthorized,
        ValidationFailed,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        TransactionNotFound,
        NotARedemption,
        RefundExceedsOriginal,
        CardClosed,
        DuplicateReference,
    ),
)
async def refund_redemption(
    redemption_id: uuid.UUID,
    body: RefundCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """An order paid partly with points or cashback is refunded: give back part or all of
    what the redemption (or a hold's capture) spent. Refunds add up to at most what was
    spent. A partner key refunds its own partner's redemptions only."""

    async def action() -> tuple[int, RefundRead]:
        return await refunds.refund_redemption(conn, program, principal, redemption_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )


@router.post(
    "/v1/accruals/{accrual_id}/refunds",
    status_code=201,
    operation_id="return_purchase",
    response_model=PurchaseReturnRead,
    responses=problem_responses(
        Unauthorized,
        ValidationFailed,
        IdempotencyKeyRequired,
        IdempotencyKeyReused,
        TransactionNotFound,
        NotAPurchase,
        RefundExceedsOriginal,
        AlreadyReversed,
        CardClosed,
        DuplicateReference,
    ),
)
async def return_purchase(
    accrual_id: uuid.UUID,
    body: PurchaseReturnCreate,
    request: Request,
    conn: Conn,
    program: CurrentProgram,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKey,
) -> Response:
    """Goods worth `amount` of a purchase came back: take back what the purchase earned, in
    proportion, from the amounts recorded when it was earned. Returns add up to at most the
    purchase, and all of them together never take back more than was earned (each rounds
    down on the running total). If the card already spent it, its balance goes below zero: a
    clawback debt, shown in its balance, during which it cannot spend. A partner key returns
    its own partner's purchases only."""

    async def action() -> tuple[int, PurchaseReturnRead]:
        return await returns.return_goods(conn, program, principal, accrual_id, body)

    return await idempotency.respond_once(
        request, conn, principal.api_key_id, idempotency_key, body, action
    )
