"""The audit: rebuild what the ledger promises from its entries and compare. Read-only, in one
REPEATABLE READ snapshot so that postings running meanwhile cannot make it see half a
transaction. For the on-call engineer (`loyalty-ledger audit`) and the operator (GET /v1/audit).
"""

from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit import repository
from app.audit.schemas import (
    AuditReport,
    CardBalanceMismatch,
    HoldMismatch,
    PendingMismatch,
    ThinTransaction,
    UnbalancedTransaction,
)


async def audit(engine: AsyncEngine, program_id: int) -> AuditReport:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            counts = (await repository.fetch(conn, repository.COUNTS, program_id))[0]
            totals = await repository.fetch(conn, repository.ASSET_TOTALS, program_id)
            unbalanced = await repository.fetch(conn, repository.UNBALANCED, program_id)
            thin = await repository.fetch(conn, repository.TOO_FEW_ENTRIES, program_id)
            cards = await repository.fetch(conn, repository.CARD_BALANCE_MISMATCHES, program_id)
            holds = await repository.fetch(conn, repository.HOLD_MISMATCHES, program_id)
            pending = await repository.fetch(conn, repository.PENDING_MISMATCHES, program_id)
    asset_totals = {row.asset: int(row.total) for row in totals}
    report = AuditReport(
        ok=not (unbalanced or thin or cards or holds or pending or any(asset_totals.values())),
        as_of=counts.as_of,
        transactions=counts.transactions,
        entries=counts.entries,
        asset_totals=asset_totals,
        unbalanced_transactions=[UnbalancedTransaction(**r._mapping) for r in unbalanced],
        transactions_with_fewer_than_two_entries=[ThinTransaction(**r._mapping) for r in thin],
        card_balance_mismatches=[CardBalanceMismatch(**r._mapping) for r in cards],
        hold_mismatches=[HoldMismatch(**r._mapping) for r in holds],
        pending_mismatches=[PendingMismatch(**r._mapping) for r in pending],
    )
    return report
