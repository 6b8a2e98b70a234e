"""`loyalty-ledger`: serve, migrate, audit, the periodic jobs (sweep-holds, tiers), and manage
API keys."""

import asyncio
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.config import Settings, get_settings

cli = typer.Typer(
    help="A double-entry ledger of loyalty points and cashback.", no_args_is_help=True
)
keys_cli = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="api-keys")

_embedded_server: Any = None


def _database_url(settings: Settings) -> str:
    """DATABASE_URL, or an embedded PostgreSQL kept in `<data_dir>/postgres`."""
    global _embedded_server
    if settings.database_url:
        return settings.database_url
    from app.db.embedded import start_embedded

    data_dir = Path(settings.data_dir) / "postgres"
    if _embedded_server is None:
        typer.echo(f"No DATABASE_URL: using embedded PostgreSQL in {data_dir}", err=True)
    _embedded_server, url = start_embedded(data_dir)
    return url


def _migrate(url: str) -> None:
    from app.db.migrate import upgrade

    upgrade(url)


async def _with_conn(url: str, settings: Settings, work: Any) -> Any:
    from app.db.engine import create_engine
    from app.programs.service import ensure_program

    engine = create_engine(url, settings)
    try:
        async with engine.begin() as conn:
            program = await ensure_program(conn, settings)
            return await work(conn, program.id)
    finally:
        await engine.dispose()


@cli.command()
def migrate() -> None:
    """Apply database migrations up to the newest."""
    settings = get_settings()
    _migrate(_database_url(settings))
    typer.echo("migrated")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log")] = True,
) -> None:
    """Migrate, print a bootstrap operator key on first start, and serve HTTP."""
    import uvicorn

    settings = get_settings()
    url = _database_url(settings)
    if migrate_first:
        _migrate(url)

    async def bootstrap(conn: AsyncConnection, program_id: int) -> str | None:
        from app.auth.service import bootstrap_operator_key

        return await bootstrap_operator_key(conn, program_id)

    key = asyncio.run(_with_conn(url, settings, bootstrap))
    if key:
        typer.echo("")
        typer.echo("First start: created an operator API key. It is shown only this once:")
        typer.echo(f"    {key}")
        typer.echo("")
    # Workers are separate processes: they read the URL from the environment.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        uvicorn.run(
            "app.main:app",
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            loop="auto",
            http="auto",
        )
    finally:
        if _embedded_server is not None:
            from app.db.embedded import stop_embedded

            typer.echo("stopping embedded PostgreSQL", err=True)
            stop_embedded(_embedded_server)


@cli.command()
def audit() -> None:
    """Check the books: rebuild every balance from the entries and compare. Exit 1 on a finding."""
    from app.audit.service import audit as run_audit

    report = _with_program(lambda engine, program: run_audit(engine, program.id))
    typer.echo(report.model_dump_json(indent=2))
    if not report.ok:
        raise typer.Exit(1)


@cli.command("sweep-holds")
def sweep_holds() -> None:
    """Release every hold whose time to live ran out, visibly, in its card's history. Safe to
    run from a scheduler while the service runs (which also sweeps, see HOLD_SWEEP_SECONDS)."""
    from app.holds.expiry import sweep

    typer.echo(f"released {_with_program(sweep)} expired holds")


@cli.command("purge-idempotency")
def purge_idempotency() -> None:
    """Delete idempotency records older than IDEMPOTENCY_RETENTION_DAYS (30 by default). Safe
    while the service runs (which also purges, see IDEMPOTENCY_PURGE_SECONDS)."""
    from app.idempotency.retention import purge

    days = get_settings().idempotency_retention_days
    purged = _with_program(lambda engine, program: purge(engine, program, days))
    typer.echo(f"purged {purged} idempotency records older than {days} days")


def _with_program(job: Any) -> Any:
    """Run `job(engine, program)` against the configured database."""
    from app.db.engine import create_engine
    from app.programs.service import ensure_program

    settings = get_settings()
    url = _database_url(settings)

    async def work() -> Any:
        engine = create_engine(url, settings)
        try:
            async with engine.begin() as conn:
                program = await ensure_program(conn, settings)
            return await job(engine, program)
        finally:
            await engine.dispose()

    return asyncio.run(work())


@cli.command("release-pending")
def release_pending() -> None:
    """Post the release of pending points whose partner's return window passed. Safe to run
    from a scheduler while the service runs (which also releases, see PENDING_RELEASE_SECONDS)."""
    from app.pending.service import release_run

    typer.echo(f"released pending points on {_with_program(release_run)} cards")


@cli.command()
def settle() -> None:
    """Close the settlement periods that ended (SETTLEMENT_PERIOD): one statement per partner
    with anything to settle. Closing again closes nothing new; safe while the service runs."""
    from app.settlement.service import close_run

    settings = get_settings()
    made = _with_program(lambda engine, program: close_run(engine, program, settings))
    typer.echo(f"{made} statements made")


@cli.command()
def expire() -> None:
    """Expire the points whose time ran out (POINTS_EXPIRY_MONTHS) and those of cards inactive
    too long (POINTS_INACTIVITY_MONTHS) into the breakage account. Safe to run twice, or
    concurrently, or while the service runs (which also expires, see EXPIRY_RUN_SECONDS)."""
    from app.expiry.run import run

    settings = get_settings()
    cards, points = _with_program(lambda engine, program: run(engine, program, settings))
    typer.echo(f"expired {points} points on {cards} cards")


@cli.command()
def tiers() -> None:
    """Review every card's tier against its qualifying spend now (cards move down only here).
    Run it daily; safe while the service runs (which also reviews, see TIER_REVIEW_SECONDS)."""
    from app.rules.review import review

    typer.echo(f"{_with_program(review)} cards moved tier")


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document.")] = Path(
        "openapi/openapi.json"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Fail if the file differs instead of writing.")
    ] = False,
) -> None:
    """Write the OpenAPI document generated from the app (deterministic: sorted keys)."""
    from app.openapi_document import render_openapi

    rendered = render_openapi()
    if check:
        current = output.read_text() if output.exists() else ""
        if current != rendered:
            typer.echo(f"{output} is stale: run `make openapi`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(rendered)
    typer.echo(f"wrote {output}")


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="operator or partner")] = "partner",
    partner_id: Annotated[str | None, typer.Option(help="Partner id, for partner keys.")] = None,
) -> None:
    """Create a key and print its secret (shown once)."""
    from app.auth.schemas import ApiKeyCreate
    from app.auth.service import create_key

    settings = get_settings()
    req = ApiKeyCreate.model_validate({"name": name, "role": role, "partner_id": partner_id})

    async def work(conn: AsyncConnection, program_id: int) -> Any:
        return await create_key(conn, program_id, req)

    created = asyncio.run(_with_conn(_database_url(settings), settings, work))
    typer.echo(f"id:  {created.id}")
    typer.echo(f"key: {created.key}")


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (prefixes only; secrets are never stored)."""
    from app.auth.service import list_keys

    settings = get_settings()

    async def work(conn: AsyncConnection, program_id: int) -> Any:
        return await list_keys(conn, program_id)

    for key in asyncio.run(_with_conn(_database_url(settings), settings, work)):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        partner = f" partner={key.partner_id}" if key.partner_id else ""
        typer.echo(f"{key.id}  {key.key_prefix}…  {key.role}{partner}  {state}  {key.name}")


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    from app.auth.service import revoke_key

    settings = get_settings()

    async def work(conn: AsyncConnection, program_id: int) -> Any:
        return await revoke_key(conn, program_id, uuid.UUID(key_id))

    revoked = asyncio.run(_with_conn(_database_url(settings), settings, work))
    typer.echo(f"revoked {revoked.id} at {revoked.revoked_at}")


def main() -> None:
    cli()
