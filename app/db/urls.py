"""Database URLs: users give `postgresql://...`; SQLAlchemy wants the asyncpg driver named."""

from sqlalchemy.engine import URL, make_url


def async_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def plain_url(url: str | URL) -> str:
    """libpq form (for psql and pgbench)."""
    parsed = make_url(str(url)) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
