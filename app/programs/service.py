"""The program this deployment serves, made sure of at startup and kept in memory."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings
from app.models.enums import AccountKind, Asset
from app.programs import repository


@dataclass(frozen=True)
class ProgramContext:
    id: int
    code: str
    name: str
    currency: str
    timezone: str
    operator_accounts: dict[tuple[str, str], int]
    """(AccountKind, Asset) -> account id of the operator's system accounts."""

    def operator_account(self, kind: AccountKind, asset: Asset) -> int:
        return self.operator_accounts[(kind.value, asset.value)]


class ProgramMisconfigured(RuntimeError):
    pass


async def ensure_program(conn: AsyncConnection, settings: Settings) -> ProgramContext:
    row = await repository.upsert_program(
        conn,
        settings.program_code,
        settings.program_name,
        settings.program_currency,
        settings.program_timezone,
    )
    if row["currency"] != settings.program_currency:
        # Every stored cashback amount is in the program's currency: switching it would
        # silently revalue them all.
        raise ProgramMisconfigured(
            f"program {row['code']!r} keeps its books in {row['currency']}, "
            f"not {settings.program_currency}"
        )
    accounts = await repository.ensure_operator_accounts(
        conn,
        int(str(row["id"])),
        [
            AccountKind.OPERATOR_ISSUED.value,
            AccountKind.OPERATOR_REDEEMED.value,
            AccountKind.OPERATOR_HELD.value,
            AccountKind.OPERATOR_BREAKAGE.value,
            AccountKind.OPERATOR_PENDING.value,
        ],
        [a.value for a in Asset],
    )
    return ProgramContext(
        id=int(str(row["id"])),
        code=str(row["code"]),
        name=str(row["name"]),
        currency=str(row["currency"]),
        timezone=str(row["timezone"]),
        operator_accounts=accounts,
    )
