"""Reports as CSV: one header row of field names, then one row per item; nested objects are
flattened with dotted names."""

import csv
import io
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = "" if value is None else value
    return out


def csv_response(
    items: Sequence[BaseModel], name: str, extra: dict[str, Any] | None = None
) -> Response:
    """`extra`: columns repeated on every row (the report's own fields, like as_of)."""
    rows = [_flat({**(extra or {}), **item.model_dump(mode="json")}) for item in items]
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
