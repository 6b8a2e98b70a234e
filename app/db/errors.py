"""Reading PostgreSQL's verdict out of SQLAlchemy's wrapped driver exceptions."""

from sqlalchemy.exc import DBAPIError


def violated_constraint(exc: DBAPIError) -> str | None:
    """The constraint or index a unique/check violation names, if the driver reported one."""
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None
