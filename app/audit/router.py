from fastapi import APIRouter, Request

from app.audit import service
from app.audit.schemas import AuditReport
from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized
from app.core.schemas import problem_responses
from app.programs.deps import CurrentProgram

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", operation_id="audit", responses=problem_responses(Unauthorized, Forbidden))
async def run_audit(request: Request, program: CurrentProgram, _: OperatorPrincipal) -> AuditReport:
    """Recompute the ledger's promises from its entries: every transaction balances per asset
    and has two or more entries, all entries sum to zero per asset, and every card's stored
    balance is the sum of its entries. Operator only; reads the whole ledger."""
    return await service.audit(request.app.state.engine, program.id)
