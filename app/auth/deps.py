"""Who is calling: the API key in `Authorization: Bearer ...`, resolved per request."""

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import keys, repository
from app.core.errors import Forbidden, Unauthorized
from app.db.session import Conn
from app.models.enums import ApiKeyRole
from app.programs.deps import CurrentProgram

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer llk_...`")


@dataclass(frozen=True)
class Principal:
    api_key_id: uuid.UUID
    role: ApiKeyRole
    partner_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        return self.role == ApiKeyRole.OPERATOR


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The API key sent, not yet checked (postings check it in their own statements)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    return credentials.credentials


async def get_principal(conn: Conn, program: CurrentProgram, credentials: Credentials) -> Principal:
    row = await repository.find_active(conn, keys.hash_key(bearer_token(credentials)))
    if row is None or row.program_id != program.id:
        raise Unauthorized("The API key is unknown or revoked.")
    return Principal(
        api_key_id=row.id,
        role=ApiKeyRole(row.role),
        partner_id=row.partner_id,
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_operator(principal: CurrentPrincipal) -> Principal:
    if not principal.is_operator:
        raise Forbidden("Only an operator key may do this.")
    return principal


OperatorPrincipal = Annotated[Principal, Depends(require_operator)]
