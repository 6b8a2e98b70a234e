from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import JSONResponse, Response

from app.core.errors import problem_body, problem_response
from app.db.migrate import current_revision

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health")
async def health() -> dict[str, str]:
    """The process is up. Touches nothing else."""
    return {"status": "ok"}


@router.get(
    "/ready",
    operation_id="ready",
    responses={503: {"description": "Database unreachable or not migrated to head."}},
)
async def ready(request: Request) -> Response:
    """The database answers and its schema is at the migration head this build expects."""
    engine: AsyncEngine = request.app.state.engine
    expected = request.app.state.expected_revision
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            revision = await current_revision(conn)
    except Exception as exc:  # any failure to reach the database means "not ready"
        body = problem_body(503, "not_ready", "Not ready", f"database unreachable: {exc}")
        return problem_response(body)
    if revision != expected:
        detail = f"database at migration {revision}, this build expects {expected}"
        return problem_response(problem_body(503, "not_ready", "Not ready", detail))
    return JSONResponse({"status": "ready", "migration": revision})
