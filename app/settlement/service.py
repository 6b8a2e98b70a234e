"""Closing settlement periods, reading statements, recording payments.

Closing a period (the program's `settlement_period`, in its time zone) makes one immutable
statement per partner with anything to settle: what its accounts moved in the postings posted
before the period's end that no statement counted yet (late ones flagged), valued at the
prices the postings recorded, plus its fees (statement.py). Each statement's net amount is
posted to the ledger as money between the partner's settlement account and the operator's, so
a partner's outstanding position is a balance like any other; payments move it back.

Closing is idempotent: a period is closed once (settlement_periods), under an advisory lock
per program, so two closes at once produce each statement once. A posting counts on one
statement only (settled_transactions): one that commits after its period closed lands on the
next statement, as late.
"""

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.agreements import repository as agreements
from app.auth.deps import Principal
from app.core.config import Settings
from app.core.ids import uuid7
from app.db.errors import violated_constraint
from app.models.enums import TransactionType
from app.partners import repository as partners
from app.partners.errors import PartnerNotFound
from app.programs.service import ProgramContext
from app.settlement import repository
from app.settlement.errors import (
    PaymentReferenceTaken,
    StatementNotFound,
    StatementOfAnotherPartner,
)
from app.settlement.periods import periods_between
from app.settlement.schemas import (
    CloseRead,
    PaymentCreate,
    PaymentRead,
    PeriodRead,
    PositionRead,
    StatementLineRead,
    StatementRead,
    direction,
)
from app.settlement.statement import Movement, Terms, net_amount, statement_lines

BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)
# A posting commits within moments of its posted_at; a day is a wide margin for reading the
# ones that committed after their period closed.
LATE_MARGIN = timedelta(days=1)


async def close(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    api_key_id: uuid.UUID | None,
    through: datetime | None = None,
    *,
    now: datetime | None = None,
) -> CloseRead:
    """Close every period that ended by `through` (and by now) and is not closed yet. `now`
    (tests) stands in for the clock."""
    await repository.lock_closing(conn, program.id)
    clock = now or await agreements.now(conn)
    limit = min(through, clock) if through else clock
    last = await repository.last_closed(conn, program.id)
    if last.period_end is None:
        first = await repository.first_posting(conn, program.id)
        start_from, scan_from = first or limit, BEGINNING
    else:
        start_from, scan_from = last.period_end, last.period_start - LATE_MARGIN
    closed = []
    for start, end in periods_between(
        start_from, limit, settings.settlement_period, program.timezone
    ):
        count = await _close_period(conn, program, api_key_id, start, end, scan_from)
        closed.append(PeriodRead(period_start=start, period_end=end, statements=count))
        scan_from = start - LATE_MARGIN
    return CloseRead(closed=closed)


async def _close_period(
    conn: AsyncConnection,
    program: ProgramContext,
    api_key_id: uuid.UUID | None,
    start: datetime,
    end: datetime,
    scan_from: datetime,
) -> int:
    moved: dict[uuid.UUID, list[Movement]] = defaultdict(list)
    settled: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for row in await repository.movements(conn, program.id, start, end, scan_from):
        moved[row.partner_id].append(
            Movement(
                account_kind=row.account_kind,
                asset=row.asset,
                correction=row.correction,
                points_price=row.points_price,
                cashback_funded=row.cashback_funded,
                late=row.late,
                postings=row.postings,
                total=int(row.total),
            )
        )
        settled[row.partner_id].update(row.transaction_ids)
    await repository.insert_period(conn, program.id, start, end)
    count = 0
    for row in await repository.terms(conn, program.id, end):
        terms = Terms(
            fee_per_period=row.fee_per_period or 0,
            fee_bps=row.fee_bps or 0,
        )
        lines = statement_lines(moved.get(row.partner_id, []), terms)
        if not lines:
            continue
        await _statement(
            conn, program, api_key_id, row.partner_id, start, end, lines, settled[row.partner_id]
        )
        count += 1
    return count


async def _statement(
    conn: AsyncConnection,
    program: ProgramContext,
    api_key_id: uuid.UUID | None,
    partner_id: uuid.UUID,
    start: datetime,
    end: datetime,
    lines: list[Any],
    transaction_ids: set[uuid.UUID],
) -> None:
    net = net_amount(lines)
    statement_id = uuid7()
    transaction_id = None
    if net:
        transaction_id = uuid7()
        await _post_money(
            conn,
            program,
            partner_id,
            transaction_id,
            TransactionType.STATEMENT,
            -net,  # the partner's account goes down by what it owes
            api_key_id,
            None,
            f"statement {start.isoformat()} to {end.isoformat()}",
        )
    await repository.insert_statement(
        conn,
        id=statement_id,
        program_id=program.id,
        partner_id=partner_id,
        start=start,
        end=end,
        net_amount=net,
        transaction_id=transaction_id,
    )
    await repository.insert_lines(
        conn,
        statement_id,
        [
            (n, x.kind, x.late, x.points_price, x.postings, x.quantity, x.amount)
            for n, x in enumerate(lines, start=1)
        ],
    )
    await repository.insert_settled(conn, statement_id, sorted(transaction_ids))


async def _post_money(
    conn: AsyncConnection,
    program: ProgramContext,
    partner_id: uuid.UUID,
    transaction_id: uuid.UUID,
    type: TransactionType,
    partner_amount: int,
    api_key_id: uuid.UUID | None,
    reference: str | None,
    description: str,
) -> None:
    accounts = await repository.settlement_accounts(conn, program.id, partner_id)
    await repository.post_money(
        conn,
        id=transaction_id,
        program_id=program.id,
        type=type.value,
        partner_id=partner_id,
        api_key_id=api_key_id,
        reference=reference,
        description=description,
        partner_account=accounts["partner_settlement"],
        operator_account=accounts["operator_settlement"],
        partner_amount=partner_amount,
    )


async def close_run(engine: AsyncEngine, program: ProgramContext, settings: Settings) -> int:
    """The periodic job and `loyalty-ledger settle`: returns the statements made."""
    async with engine.begin() as conn:
        closed = await close(conn, program, settings, None)
    return sum(p.statements for p in closed.closed)


def _visible(principal: Principal, partner_id: uuid.UUID) -> bool:
    return principal.is_operator or principal.partner_id == partner_id


def _read(row: Any, currency: str, lines: list[Any] | None = None) -> StatementRead:
    return StatementRead(
        **row._mapping,
        direction=direction(row.net_amount),
        currency=currency,
        lines=None if lines is None else [StatementLineRead(**x._mapping) for x in lines],
    )


async def statements(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    partner_id: uuid.UUID | None,
    limit: int,
) -> list[StatementRead]:
    """Newest first. A partner key lists its own, whatever `partner_id` says."""
    if not principal.is_operator:
        partner_id = principal.partner_id
    rows = await repository.statements(conn, program.id, partner_id, limit)
    return [_read(r, program.currency) for r in rows]


async def statement(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, statement_id: uuid.UUID
) -> StatementRead:
    """With its lines. Another partner's statement does not exist for a partner key."""
    row = await repository.statement(conn, program.id, statement_id)
    if row is None or not _visible(principal, row.partner_id):
        raise StatementNotFound()
    return _read(row, program.currency, await repository.lines(conn, statement_id))


async def position(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, partner_id: uuid.UUID
) -> PositionRead:
    if not _visible(principal, partner_id) or not await partners.exists(
        conn, program.id, partner_id
    ):
        raise PartnerNotFound()
    row = await repository.position(conn, partner_id)
    return PositionRead(
        partner_id=partner_id,
        statements=row.statements,
        payments=row.payments,
        balance=row.account,
        direction=direction(-row.account),
        currency=program.currency,
    )


async def record_payment(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    partner_id: uuid.UUID,
    req: PaymentCreate,
) -> tuple[int, PaymentRead]:
    if not await partners.exists(conn, program.id, partner_id):
        raise PartnerNotFound()
    if req.statement_id is not None:
        paid = await repository.statement(conn, program.id, req.statement_id)
        if paid is None:
            raise StatementNotFound()
        if paid.partner_id != partner_id:
            raise StatementOfAnotherPartner()
    if await repository.payment_reference_taken(conn, partner_id, req.reference):
        raise PaymentReferenceTaken(f"Payment {req.reference!r} was recorded already.")
    amount = req.amount if req.direction == "received" else -req.amount
    payment_id = uuid7()
    await _post_money(
        conn,
        program,
        partner_id,
        payment_id,
        TransactionType.PAYMENT,
        amount,  # received: the partner owes less
        principal.api_key_id,
        req.reference,
        f"payment {req.direction}",
    )
    try:
        row = await repository.insert_payment(
            conn,
            id=payment_id,
            program_id=program.id,
            partner_id=partner_id,
            statement_id=req.statement_id,
            amount=amount,
            reference=req.reference,
            api_key_id=principal.api_key_id,
        )
    except IntegrityError as exc:  # pragma: no cover - a race on the same reference
        if violated_constraint(exc) != "uq_payments_partner_reference":
            raise
        row = None
    if row is None:
        # Recorded by a request that committed meanwhile: the posting above must not commit.
        err = PaymentReferenceTaken(f"Payment {req.reference!r} was recorded already.")
        err.replayable = False
        raise err
    return 201, PaymentRead(
        id=row.id,
        partner_id=partner_id,
        statement_id=row.statement_id,
        direction=req.direction,
        amount=req.amount,
        reference=row.reference,
        created_at=row.created_at,
        outstanding=await position(conn, program, principal, partner_id),
    )
